"""tortie-kube-controllers' settings, read from the environment with Calico's names.

Owns the registry SETTINGS (name, default, parser, description: docs/kubernetes.md
shows it, tests/chart checks the chart's env against it) and `load()`, which
reads every setting once and refuses a bad value with one ConfigError naming
the variable and the value. Nothing is started before the whole configuration
is valid. etcd's settings are datastore.config's (ETCD_ENDPOINTS, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.settings import (
    InvalidSetting,
    non_negative_duration,
    parse_bool,
    positive_duration,
)

__all__ = ["CONTROLLERS", "ConfigError", "ControllersConfig", "SETTINGS", "Setting", "load"]

# Calico's ENABLED_CONTROLLERS words; "profile" is Calico's older name for "namespace".
CONTROLLERS = ("policy", "namespace", "serviceaccount", "workloadendpoint", "node")
_ALIASES = {"profile": "namespace"}
LOG_LEVELS = ("debug", "info", "warning", "error", "fatal", "panic")


class ConfigError(ValueError):
    """A setting with a value tortie-kube-controllers refuses; names variable and value."""


def _controllers(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for word in (w.strip().lower() for w in text.split(",")):
        if not word:
            continue
        word = _ALIASES.get(word, word)
        if word not in CONTROLLERS:
            raise InvalidSetting(f"unknown controller {word!r} (known: {', '.join(CONTROLLERS)})")
        if word not in out:
            out.append(word)
    return tuple(out)


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise InvalidSetting(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def _datastore_type(text: str) -> str:
    value = text.strip()
    if value != "etcdv3":
        # In Kubernetes-datastore mode Calico needs no kube-controllers for these kinds;
        # tortie's datastore is etcd only.
        raise InvalidSetting("tortie supports only etcdv3 (the Kubernetes datastore is not "
                             "implemented)")
    return value


def _port(text: str) -> int:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise InvalidSetting("not an integer") from None
    if not 0 <= value <= 65535:
        raise InvalidSetting("must be between 0 and 65535")
    return value


def _string(text: str) -> str:
    return text.strip()


@dataclass(frozen=True)
class Setting:
    name: str
    attr: str
    default: Any
    default_text: str
    description: str
    parse: Callable[[str], Any] = field(repr=False)


SETTINGS: tuple[Setting, ...] = (
    Setting("ENABLED_CONTROLLERS", "enabled_controllers", CONTROLLERS, ",".join(CONTROLLERS),
            "Controllers to run, comma-separated (`profile` is an alias of `namespace`).",
            _controllers),
    Setting("LOG_LEVEL", "log_level", "info", "info",
            "Minimum level logged: debug, info, warning, error, fatal, panic.", _log_level),
    Setting("RECONCILER_PERIOD", "reconciler_period", 300.0, "5m",
            "How often each controller re-lists etcd and repairs drift both ways.",
            positive_duration),
    Setting("COMPACTION_PERIOD", "compaction_period", 600.0, "10m",
            "How often etcd is compacted to the revision one period ago; 0 disables.",
            non_negative_duration),
    Setting("LEAK_GRACE_PERIOD", "leak_grace_period", 900.0, "15m",
            "How long a Kubernetes Node must stay absent before its tortie Node, block "
            "affinities and addresses are released (Calico's leakGracePeriod).",
            non_negative_duration),
    Setting("HEALTH_ENABLED", "health_enabled", True, "true",
            "Serve /liveness, /readiness and /metrics.", parse_bool),
    Setting("TORTIE_HEALTH_HOST", "health_host", "0.0.0.0", "0.0.0.0",
            "Address the health and metrics server binds (the pod's own network).", _string),
    Setting("TORTIE_HEALTH_PORT", "health_port", 9094, "9094",
            "Port of /liveness, /readiness and /metrics (Calico's metrics port).", _port),
    Setting("DATASTORE_TYPE", "datastore_type", "etcdv3", "etcdv3",
            "Must be etcdv3.", _datastore_type),
    Setting("KUBECONFIG", "kubeconfig", "", "(unset)",
            "kubeconfig file for the API server; unset uses the pod's in-cluster credentials.",
            _string),
    Setting("TORTIE_LEADER_ELECTION", "leader_election", False, "false",
            "Take a coordination.k8s.io Lease before running (for more than one replica).",
            parse_bool),
    Setting("TORTIE_LEASE_NAME", "lease_name", "tortie-kube-controllers",
            "tortie-kube-controllers", "Name of the Lease used for leader election.", _string),
    Setting("POD_NAMESPACE", "pod_namespace", "kube-system", "kube-system",
            "Namespace of the Lease (the Downward API's metadata.namespace).", _string),
    Setting("POD_NAME", "pod_name", "", "(the host name)",
            "This replica's identity in the Lease (the Downward API's metadata.name).", _string),
)


@dataclass(frozen=True)
class ControllersConfig:
    enabled_controllers: tuple[str, ...] = CONTROLLERS
    log_level: str = "info"
    reconciler_period: float = 300.0
    compaction_period: float = 600.0
    leak_grace_period: float = 900.0
    health_enabled: bool = True
    health_host: str = "0.0.0.0"
    health_port: int = 9094
    datastore_type: str = "etcdv3"
    kubeconfig: str = ""
    leader_election: bool = False
    lease_name: str = "tortie-kube-controllers"
    pod_namespace: str = "kube-system"
    pod_name: str = ""


def load(environ: Mapping[str, str] | None = None) -> ControllersConfig:
    """Every setting from `environ` (os.environ by default); ConfigError on the first bad one."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = env.get(s.name)
        if raw is None or raw.strip() == "":
            values[s.attr] = s.default
            continue
        try:
            values[s.attr] = s.parse(raw)
        except InvalidSetting as exc:
            raise ConfigError(f"{s.name}={raw!r}: {exc}") from None
    return ControllersConfig(**values)
