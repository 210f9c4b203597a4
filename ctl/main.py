"""`ctl`: tortie's calicoctl. The command group, connection set-up and the error edge.

The edge rule: every failure becomes one clear line on stderr and exit code 1;
no traceback ever reaches the user (`--log-level debug` logs it instead).
Commands live one noun per module (crud, ipam, node, ...) and stay thin:
parse arguments, call the library, print.
"""

from __future__ import annotations

import logging
import sys

import click

from datastore import config as dsconfig
from datastore.errors import DatastoreError
from datastore.etcd import EtcdClient
from datastore.store import ResourceStore

from . import crud, explain, ipam, label, node
from .common import CtlFailure
from .version import client_version

_log = logging.getLogger("ctl")


class CtlContext:
    """Lazily connects, so `ctl version` and `--help` work without etcd."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._client: EtcdClient | None = None

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            cfg = dsconfig.load(self.config_path)
            _log.debug("datastore %s (%s)", cfg.urls, cfg.source)
            self._client = EtcdClient(cfg)
        return self._client

    @property
    def store(self) -> ResourceStore:
        return ResourceStore(self.client)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", default=None, metavar="PATH",
              help=f"Client config file (default {dsconfig.DEFAULT_CONFIG_PATH}).")
@click.option("-l", "--log-level", default="panic",
              type=click.Choice(["panic", "fatal", "error", "warn", "warning", "info", "debug"],
                                case_sensitive=False), help="Log level (default panic).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str) -> None:
    """tortie command line: manage pools, nodes, BGP and IPAM in the datastore."""
    level = {"panic": logging.CRITICAL + 10, "fatal": logging.CRITICAL, "warn": logging.WARNING}
    logging.basicConfig(level=level.get(log_level.lower(), getattr(logging, log_level.upper(), 0)),
                        stream=sys.stderr, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    obj = CtlContext(config_path)
    ctx.obj = obj
    ctx.call_on_close(obj.close)


@cli.command()
@click.pass_obj
def version(obj: CtlContext) -> None:
    """Print the client version and the cluster's datastore."""
    click.echo(f"Client Version:    {client_version()}")
    try:
        cfg = dsconfig.load(obj.config_path)
        obj.client.revision()
        click.echo(f"Cluster Type:      etcdv3 ({', '.join(cfg.urls)})")
    except DatastoreError as exc:
        click.echo(f"Cluster Type:      unknown ({exc})")


# Each noun's module adds its commands to the group.
crud.register(cli)
explain.register(cli)
ipam.register(cli)
label.register(cli)
node.register(cli)


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="ctl", standalone_mode=False)
    except CtlFailure as exc:
        click.echo(str(exc), err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except click.UsageError as exc:
        # One line, like every other failure; the help text is one flag away.
        where = exc.ctx.command_path if exc.ctx else "ctl"
        click.echo(f"{exc.format_message()} (see '{where} --help')", err=True)
        return 1
    except click.ClickException as exc:
        click.echo(exc.format_message(), err=True)
        return 1
    except DatastoreError as exc:
        click.echo(str(exc), err=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - the edge: never show a traceback
        _log.debug("unexpected error", exc_info=True)
        click.echo(f"internal error: {type(exc).__name__}: {exc} (run with --log-level debug for "
                   "details)", err=True)
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
