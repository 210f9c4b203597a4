"""BGP passwords, read from Kubernetes secrets mounted as files.

The datastore holds only a `secretKeyRef {name, key}`; the password itself is
never written to etcd. A secret mounted as a volume is a directory per
secret with a file per key, so `<dir>/<name>/<key>` is the password (one
trailing newline stripped: `echo pw >file` is the common way to make one).
Lookups never raise: a missing, unreadable or oddly named entry is None and
the planner leaves that peer out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from datastore.resources.bgp import SecretKeyRef

_log = logging.getLogger(__name__)

ENV_VAR = "TORTIE_BGP_SECRETS_DIR"
DEFAULT_DIR = "/etc/tortie/bgp-secrets"


def _safe_part(part: str) -> bool:
    # Names come from the datastore: never let one climb out of the secrets directory.
    return bool(part) and part not in (".", "..") and "/" not in part and "\0" not in part


class SecretsDir:
    """`password_for(ref)`: the password in `<path>/<ref.name>/<ref.key>`, or None."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretsDir:
        env = os.environ if environ is None else environ
        return cls(env.get(ENV_VAR) or DEFAULT_DIR)

    def __call__(self, ref: SecretKeyRef) -> str | None:
        return self.password_for(ref)

    def password_for(self, ref: SecretKeyRef) -> str | None:
        if not (_safe_part(ref.name) and _safe_part(ref.key)):
            _log.warning("BGP secret reference %s/%s is not a plain name", ref.name, ref.key)
            return None
        path = self.path / ref.name / ref.key
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            _log.warning("cannot read BGP secret %s: %s", path, exc.strerror or exc)
            return None
        except UnicodeDecodeError:  # the message would quote a byte of the password
            _log.warning("BGP secret %s is not UTF-8 text", path)
            return None
        return text[:-1] if text.endswith("\n") else text

    def __repr__(self) -> str:
        return f"SecretsDir({str(self.path)!r})"
