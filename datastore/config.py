"""Datastore connection settings, read exactly as calicoctl reads them.

Sources, highest precedence first:
  1. a config file given with -c/--config (must exist), or the default
     /etc/calico/calicoctl.cfg (used only when present);
  2. the environment: ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE,
     ETCD_KEY_FILE, ETCD_USERNAME, ETCD_PASSWORD, DATASTORE_TYPE, each also
     accepted with a CALICO_ prefix (envconfig's prefix rule: CALICO_X wins).

Connection liveness (tortie's own, in etcdctl's spirit: --keepalive-time,
--keepalive-timeout) is read from the environment whatever the source of the
rest: ETCD_KEEPALIVE_TIME, ETCD_KEEPALIVE_TIMEOUT, ETCD_WATCH_STALL_TIMEOUT,
in seconds (also with a CALICO_ prefix). See docs/agent.md.

When a config file is in use, calicoctl ignores the environment; so do we.
The result is an immutable EtcdConfig that remembers where each value came
from, so that the agent and ctl can log it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .errors import DatastoreError

DEFAULT_CONFIG_PATH = "/etc/calico/calicoctl.cfg"
DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"

# etcd refuses client pings more often than its --grpc-keepalive-min-time (5 s by
# default) with GOAWAY "too_many_pings"; 6 s keeps clear of that boundary. A ping
# unanswered for 5 s closes the connection: a dead one is noticed within ~11 s.
DEFAULT_KEEPALIVE_TIME = 6.0
MIN_KEEPALIVE_TIME = 5.0
DEFAULT_KEEPALIVE_TIMEOUT = 5.0
# A watch stream that delivers nothing, not even the answer to a progress request,
# for this long is declared stalled and re-established on another member.
DEFAULT_WATCH_STALL_TIMEOUT = 10.0


class ConfigError(DatastoreError):
    """The connection configuration is unreadable or invalid."""


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class Liveness:
    """How a client notices a dead connection: gRPC keepalive pings and watch stalls."""

    time: float = DEFAULT_KEEPALIVE_TIME  # seconds between pings on a quiet connection
    timeout: float = DEFAULT_KEEPALIVE_TIMEOUT  # a ping unanswered this long kills it
    watch_stall_timeout: float = DEFAULT_WATCH_STALL_TIMEOUT


_LIVENESS_ENV = {
    "ETCD_KEEPALIVE_TIME": ("time", MIN_KEEPALIVE_TIME),
    "ETCD_KEEPALIVE_TIMEOUT": ("timeout", 1.0),
    "ETCD_WATCH_STALL_TIMEOUT": ("watch_stall_timeout", 2.0),
}


def load_liveness(environ: Mapping[str, str] | None = None) -> Liveness:
    """The liveness settings from the environment; a bad value names the variable."""
    env = os.environ if environ is None else environ
    values: dict[str, float] = {}
    for name, (attr, minimum) in _LIVENESS_ENV.items():
        for candidate in (f"CALICO_{name}", name):
            text = env.get(candidate)
            if not text:
                continue
            try:
                seconds = float(text)
            except ValueError:
                seconds = float("nan")
            if not seconds >= minimum or seconds == float("inf"):
                raise ConfigError(
                    f"invalid {candidate} '{text}': expected a number of seconds, "
                    f"at least {minimum:g}"
                )
            values[attr] = seconds
            break
    return Liveness(**values)


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[Endpoint, ...]
    ca_cert_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    source: str = "default"
    # name -> where it came from, e.g. {"etcdEndpoints": "env ETCD_ENDPOINTS"}
    provenance: Mapping[str, str] = field(default_factory=dict)
    keepalive: Liveness = field(default_factory=lambda: Liveness())

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.endpoints]

    @property
    def tls(self) -> bool:
        return any(e.scheme == "https" for e in self.endpoints) or bool(self.ca_cert_file)


_FILE_FIELDS = {
    "datastoreType": "datastore_type",
    "etcdEndpoints": "endpoints",
    "etcdCACertFile": "ca_cert_file",
    "etcdCertFile": "cert_file",
    "etcdKeyFile": "key_file",
    "etcdUsername": "username",
    "etcdPassword": "password",
}
_ENV_FIELDS = {
    "DATASTORE_TYPE": "datastore_type",
    "ETCD_ENDPOINTS": "endpoints",
    "ETCD_CA_CERT_FILE": "ca_cert_file",
    "ETCD_CERT_FILE": "cert_file",
    "ETCD_KEY_FILE": "key_file",
    "ETCD_USERNAME": "username",
    "ETCD_PASSWORD": "password",
}


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """Parse a comma-separated list of etcd URLs ('http://10.0.0.1:2379,...')."""
    endpoints = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        if "://" not in raw:
            raw = "http://" + raw
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"invalid etcd endpoint '{raw}': expected http(s)://host:port")
        try:
            port = parts.port or 2379
        except ValueError as exc:
            raise ConfigError(f"invalid etcd endpoint '{raw}': {exc}") from None
        endpoints.append(Endpoint(parts.scheme, parts.hostname, port))
    if not endpoints:
        raise ConfigError(f"invalid etcd endpoints '{text}': no endpoint given")
    return tuple(endpoints)


def _build(values: dict[str, str], provenance: dict[str, str], source: str,
           environ: Mapping[str, str] | None = None) -> EtcdConfig:
    dtype = values.get("datastore_type", "etcdv3") or "etcdv3"
    if dtype != "etcdv3":
        raise ConfigError(
            f"unsupported datastoreType '{dtype}': tortie stores its data in etcd (etcdv3)"
        )
    endpoints = parse_endpoints(values.get("endpoints") or DEFAULT_ENDPOINTS)
    cert, key = values.get("cert_file"), values.get("key_file")
    if bool(cert) != bool(key):
        raise ConfigError("etcdCertFile and etcdKeyFile must be given together")
    for name in ("ca_cert_file", "cert_file", "key_file"):
        path = values.get(name)
        if path and not Path(path).is_file():
            raise ConfigError(f"{name.replace('_', ' ')} '{path}' does not exist")
    return EtcdConfig(
        endpoints=endpoints,
        ca_cert_file=values.get("ca_cert_file") or None,
        cert_file=cert or None,
        key_file=key or None,
        username=values.get("username") or None,
        password=values.get("password") or None,
        source=source,
        provenance=provenance,
        keepalive=load_liveness(environ),
    )


def load_file(path: str) -> EtcdConfig:
    try:
        text = Path(path).read_text()
    except OSError:
        raise ConfigError(f"Error reading config file: {path}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"syntax error in {path}: failed to parse config as YAML/JSON: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"syntax error in {path}: expected a mapping")
    if doc.get("apiVersion") != "projectcalico.org/v3":
        raise ConfigError(f"invalid config file: unknown APIVersion '{doc.get('apiVersion')}'")
    if doc.get("kind") != "CalicoAPIConfig":
        raise ConfigError(f"invalid config file: expected kind 'CalicoAPIConfig', got '{doc.get('kind')}'")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"invalid config file {path}: spec must be a mapping")
    values: dict[str, str] = {}
    provenance: dict[str, str] = {}
    for fname, attr in _FILE_FIELDS.items():
        if spec.get(fname) not in (None, ""):
            values[attr] = str(spec[fname])
            provenance[fname] = f"file {path}"
    return _build(values, provenance, f"file {path}")


def load_env(environ: Mapping[str, str] | None = None) -> EtcdConfig:
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    provenance: dict[str, str] = {}
    for name, attr in _ENV_FIELDS.items():
        for candidate in (f"CALICO_{name}", name):
            if env.get(candidate):
                values[attr] = env[candidate]
                provenance[attr] = f"env {candidate}"
                break
    return _build(values, provenance, "environment" if values else "default", env)


def load(config_path: str | None = None, environ: Mapping[str, str] | None = None) -> EtcdConfig:
    """calicoctl's rule: an explicit file must exist; the default file is optional."""
    if config_path and config_path != DEFAULT_CONFIG_PATH:
        return load_file(config_path)
    if Path(DEFAULT_CONFIG_PATH).is_file():
        return load_file(DEFAULT_CONFIG_PATH)
    return load_env(environ)
