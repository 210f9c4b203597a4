"""agent.errors: the exceptions the agent's start-up raises to its edge.

Owns the tree; the modules that raise them (agent.config, agent.autodetect,
agent.startup, agent.tunnel_addresses) import it from here, so none of them
needs another for its errors. The edge (agent.main, agent.bgp_sidecar) turns
any of them into one clear message and exit code 1:

    StartupError
     ├── ConfigError                 a setting could not be parsed (names variable and value)
     ├── AutodetectError             no address found / bad method / bad CIDR or regex
     ├── NodeNameError               the node name is not a valid resource name
     ├── AddressError                no usable address
     ├── NodeIPConflict              another Node has this node's address
     ├── NodeWriteError              the Node could not be written
     ├── TunnelAddressError          a tunnel address could not be allocated or released
     └── StartupResourcesError       TORTIE_STARTUP_RESOURCES is unreadable, invalid, or asks
                                     for what the datastore cannot take (names file, document,
                                     field and value)

Datastore and IPAM failures that are not the operator's fault propagate as
their own trees (datastore.errors; ipam.errors, wrapped in TunnelAddressError
where start-up allocates). The dataplane's are agent.dataplane.errors.
"""

from __future__ import annotations

from collections.abc import Sequence


class StartupError(Exception):
    """Root of the errors that stop the agent from starting (see the module docstring)."""


class ConfigError(StartupError):
    """A setting's value could not be parsed. Carries the variable name and the raw value."""

    def __init__(self, name: str, value: str, reason: str, message: str | None = None) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        super().__init__(message or f"invalid value for {name}: {value!r}: {reason}")


class AutodetectError(StartupError):
    """Detection failed or the method is unusable. `method` and `version` say which."""

    def __init__(self, message: str, method: str = "", version: int = 4) -> None:
        self.method = method
        self.version = version
        super().__init__(message)


class NodeNameError(StartupError):
    """The resolved node name is not a valid resource name."""


class AddressError(StartupError):
    """No usable address: detection failed with nothing stored, or none configured."""


class NodeIPConflict(StartupError):
    """Another Node uses this node's address. One Calico message per conflict."""

    def __init__(self, messages: Sequence[str], v4: bool, v6: bool) -> None:
        self.messages = list(messages)
        self.v4 = v4
        self.v6 = v6
        super().__init__("\n".join(self.messages))


class NodeWriteError(StartupError):
    """The Node could not be written (it kept changing, or was refused)."""


class TunnelAddressError(StartupError):
    """A tunnel address could not be allocated or released."""


class StartupResourcesError(StartupError):
    """The start-up resources cannot be applied (found before their first write, but for a
    race lost to another writer midway)."""


__all__ = [
    "AddressError", "AutodetectError", "ConfigError", "NodeIPConflict", "NodeNameError",
    "NodeWriteError", "StartupError", "StartupResourcesError", "TunnelAddressError",
]
