"""WorkloadEndpoint: the host side of one pod's (or VM's) network interface.

Written by the CNI plugin on ADD and removed on DEL; the agent turns the local
ones into `<ip> dev <interfaceName> scope link` routes and host-side sysctls,
and remote ones whose addresses are borrowed into /32 routes (agent/calc).

Namespaced, as in Calico: the key is
`/calico/resources/v3/projectcalico.org/workloadendpoints/<namespace>/<name>`,
and a document without a namespace lands in `default` (calicoctl's default).
Calico names an endpoint `<node>-<orchestrator>-<pod>-<endpoint>` with every
'-' inside a part doubled; that form is not enforced (other orchestrators
name endpoints their own way), only the DNS-1123 subdomain rules every
resource name follows (which allow the doubled '-').

Rules are libcalico-go's (`validator/v3/validator.go`
`validateWorkloadEndpointSpec`, `validateIPNAT`): ipNetworks hold single
addresses (/32 or /128; a bare address means that), every NAT's internal IP is
one of those addresses and has the same family as its external IP, the
gateways are of their family, interfaceName is required and a valid Linux
interface name (Calico's `^[a-zA-Z0-9_.-]{1,15}$`), containerID is letters,
digits and inner '-', mac is a MAC, and a port without a name must have a
hostPort (`validateWorkloadEndpointPort`: it exists for its host mapping, not
for named-port policy); a port's hostIP is an address or a CIDR with no host bits
set (the `net` tag, `validateIPNetwork`). Addresses and CIDRs are stored canonically, so the
agent can compare them as strings.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, field_validator, model_validator

from ..errors import FieldError
from ..names import port_name_problem
from . import base
from .base import ItemError, Resource, StrictModel, parse_ip

# Calico's `interface` validator (validator.go interfaceRegex); the kernel's own limit
# is IFNAMSIZ-1 = 15 bytes, and "." / ".." are refused by dev_valid_name().
NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
_IFNAME_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
# DNS-1123 label: what Kubernetes (and so Calico) accepts as a namespace name.
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# validator.go's containerIDRegex.
_CONTAINER_ID_RE = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")

# Go field names for the error paths (base.go_path capitalises the rest itself).
base.GO_NAMES.update({
    "ipNetworks": "IPNetworks", "ipNATs": "IPNATs", "ipv4Gateway": "IPv4Gateway",
    "ipv6Gateway": "IPv6Gateway", "mac": "MAC", "hostIP": "HostIP",
    "internalIP": "InternalIP", "externalIP": "ExternalIP", "containerID": "ContainerID",
})


def _single_address_network(value: str) -> str:
    """'10.65.0.2' or '10.65.0.2/32' -> '10.65.0.2/32'; a wider network is refused."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("must be an IP address or CIDR, e.g. 10.65.0.2/32") from None
    if net.num_addresses != 1:
        raise ValueError("IP network contains multiple addresses")
    return str(net)


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("must be a valid CIDR, e.g. 10.65.0.0/26") from None


def _ip_or_masked_cidr(value: str) -> str:
    """Calico's `net` tag (validator.go validateIPNetwork): an address, or a CIDR whose
    address is its network's (10.0.0.0/24, not 10.0.0.1/24)."""
    if "/" not in value:
        return parse_ip(value)
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValueError("must be an IP address or a CIDR with no host bits set, "
                         "e.g. 10.0.0.0/24") from None


# Item types, so that an error names the item: IPNetworks[1], not the whole list.
SingleAddressNetwork = Annotated[str, AfterValidator(_single_address_network)]
Cidr = Annotated[str, AfterValidator(_cidr)]


class IPNAT(StrictModel):
    """One 1:1 NAT of an endpoint address (Calico's floating IP)."""

    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"internalIP", "externalIP"})

    internalIP: str
    externalIP: str

    @field_validator("internalIP", "externalIP")
    @classmethod
    def _ips(cls, v: str) -> str:
        return parse_ip(v)

    @model_validator(mode="after")
    def _same_family(self) -> IPNAT:
        if ipaddress.ip_address(self.internalIP).version != ipaddress.ip_address(
                self.externalIP).version:
            raise ItemError(f"mismatched IP versions: {self.internalIP} and {self.externalIP}",
                            self.externalIP, ".ExternalIP")
        return self

    def __str__(self) -> str:
        return f"{self.internalIP}<->{self.externalIP}"


class WorkloadEndpointPort(StrictModel):
    """A port of the workload: named (for named-port policy rules), host-mapped, or both."""

    # No field of internalapi.WorkloadEndpointPort has omitempty: a port without a host
    # mapping prints `hostPort: 0` and `hostIP: ""`, the Go zeros these default to.
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"name", "protocol", "port", "hostPort",
                                                        "hostIP"})

    name: str = ""
    protocol: Literal["TCP", "UDP", "SCTP", "tcp", "udp", "sctp"]
    port: int
    hostPort: int = 0
    hostIP: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = port_name_problem(v) if v else None
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError("port must be between 1 and 65535")
        return v

    @field_validator("hostPort")
    @classmethod
    def _host_port(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError("hostPort must be between 0 and 65535")
        return v

    @field_validator("hostIP")
    @classmethod
    def _host_ip(cls, v: str) -> str:
        return _ip_or_masked_cidr(v) if v else ""


class WorkloadEndpointSpec(StrictModel):
    orchestrator: str | None = None
    workload: str | None = None
    node: str | None = None
    containerID: str | None = None
    pod: str | None = None
    endpoint: str | None = None
    serviceAccountName: str | None = None
    ipNetworks: list[SingleAddressNetwork] | None = None
    ipNATs: list[IPNAT] | None = None
    ipv4Gateway: str | None = None
    ipv6Gateway: str | None = None
    profiles: list[str] | None = None
    interfaceName: str | None = None
    mac: str | None = None
    ports: list[WorkloadEndpointPort] | None = None
    allowSpoofedSourcePrefixes: list[Cidr] | None = None

    @field_validator("ipv4Gateway")
    @classmethod
    def _gw4(cls, v: str | None) -> str | None:
        if not v:
            return None
        try:
            return parse_ip(v, 4)
        except ValueError:
            raise ValueError("invalid IPv4 gateway address specified") from None

    @field_validator("ipv6Gateway")
    @classmethod
    def _gw6(cls, v: str | None) -> str | None:
        if not v:
            return None
        try:
            return parse_ip(v, 6)
        except ValueError:
            raise ValueError("invalid IPv6 gateway address specified") from None

    @field_validator("interfaceName")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not _IFNAME_RE.match(v) or v in (".", ".."):
            raise ValueError("interface name must be 1-15 characters of letters, digits, "
                             "'_', '.' and '-'")
        return v

    @field_validator("containerID")
    @classmethod
    def _container_id(cls, v: str | None) -> str | None:
        if v and not _CONTAINER_ID_RE.match(v):
            raise ValueError("containerID must consist of letters, digits and '-', and must "
                             "start and end with a letter or digit")
        return v or None

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not _MAC_RE.match(v):
            raise ValueError("must be a MAC address like ee:ee:ee:ee:ee:ee")
        return v.replace("-", ":").lower()

    @field_validator("node", "pod")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return base.check_subdomain(v) if v else None

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, v: list[str] | None) -> list[str] | None:
        for profile in v or ():
            # Kubernetes profiles are kns.<namespace> / ksa.<namespace>.<sa>: subdomain names.
            if not profile or len(profile) > 253 or not base.NAME_RE.match(profile):
                raise ValueError(f"invalid profile name '{profile}'")
        return v


class WorkloadEndpoint(Resource):
    kind_name: ClassVar[str] = "WorkloadEndpoint"
    plural: ClassVar[str] = "workloadendpoints"
    aliases: ClassVar[tuple[str, ...]] = ("workloadendpoint", "workloadendpoints", "wep", "weps")
    namespaced: ClassVar[bool] = True

    kind: Literal["WorkloadEndpoint"] = "WorkloadEndpoint"
    spec: WorkloadEndpointSpec = WorkloadEndpointSpec()

    @model_validator(mode="after")
    def _calico_labels(self) -> WorkloadEndpoint:
        # libcalico-go's clientv3 stores every endpoint with these two labels set over
        # whatever the document says (workloadendpoint.go updateLabelsForStorage).
        labels = dict(self.metadata.labels or {})
        labels[NAMESPACE_LABEL] = self.namespace or base.DEFAULT_NAMESPACE
        labels[ORCHESTRATOR_LABEL] = self.spec.orchestrator or ""
        if labels != self.metadata.labels:
            self.metadata.labels = labels
        return self

    @property
    def ip_networks(self) -> list[str]:
        return list(self.spec.ipNetworks or ())

    def validate_semantics(self) -> list[FieldError]:
        errs: list[FieldError] = []
        ns = self.namespace or ""
        if len(ns) > 63 or not _NAMESPACE_RE.match(ns):
            errs.append(FieldError(
                "WorkloadEndpoint.Metadata.Namespace", ns,
                "namespace must consist of lower case alphanumeric characters or '-', "
                "start and end with an alphanumeric character, and be at most 63 characters"))
        spec = self.spec
        if spec.interfaceName is None:
            # Required as Calico requires it, but here rather than in the model: a
            # stored endpoint without one (written by another tool) still loads, and
            # the agent reports it instead of routing it (agent/calc).
            errs.append(FieldError("WorkloadEndpoint.Spec.InterfaceName", "",
                                   "required field is missing"))
        networks = [ipaddress.ip_network(n) for n in spec.ipNetworks or ()]
        for i, nat in enumerate(spec.ipNATs or ()):
            internal = ipaddress.ip_address(nat.internalIP)
            if not any(internal in n for n in networks):
                errs.append(FieldError(f"WorkloadEndpoint.Spec.IPNATs[{i}].InternalIP",
                                       nat.internalIP, "NAT is not in the endpoint networks"))
        for i, port in enumerate(spec.ports or ()):
            if not port.name and not port.hostPort:
                errs.append(FieldError(
                    f"WorkloadEndpoint.Spec.Ports[{i}].Name", "",
                    "WorkloadEndpointPort name must not be empty if no HostPort is specified"))
        if len(set(networks)) != len(networks):
            errs.append(FieldError("WorkloadEndpoint.Spec.IPNetworks", ",".join(
                spec.ipNetworks or ()), "ipNetworks must not repeat an address"))
        return errs
