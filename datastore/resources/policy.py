"""Calico's policy resources: NetworkPolicy, GlobalNetworkPolicy, Tier, Profile, NetworkSet,
GlobalNetworkSet, and the rules they hold.

Owns the stored form of policy and its validation; evaluation lives in `policy/`.
Fields, JSON names and defaults are projectcalico.org/v3's
(`api/pkg/apis/projectcalico/v3/{policy_common,networkpolicy,globalnetworkpolicy,
tier,profile,networkset,globalnetworkset}.go`); rules and messages are
libcalico-go's (`lib/validator/v3/validator.go`) plus the CEL rules the v3 types
carry as kubebuilder XValidation markers.

Invariants, so that every reader (the agent, `ctl explain`, the k8s converter)
sees the same policy without re-deriving anything:
- defaults are resolved in the model: `tier` is "default" when omitted, an empty
  `selector` is "all()", `types` follows Calico's defaulting
  (`api/pkg/defaults/networkpolicy.go`), and the `projectcalico.org/tier` label is
  set to the tier, as libcalico-go's defaulting does on create and update;
- values are stored canonically: protocols by Calico's name or as a number, ports
  as an int, "first:last" or a port name (Calico's own JSON for numorstring.Port),
  CIDRs with their prefix;
- names follow the rules of Calico v3.32 and later, where a policy's datastore
  name is its plain name (no `<tier>.` prefix; see docs/policy.md).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import Field, PlainSerializer, PlainValidator, field_validator, model_validator

from . import base
from .base import ObjectMeta, Resource, StrictModel, check_selector

DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
TIER_LABEL = "projectcalico.org/tier"

PolicyType = Literal["Ingress", "Egress"]
Action = Literal["Allow", "Deny", "Log", "Pass"]

base.GO_NAMES.update({
    "ipVersion": "IPVersion", "icmp": "ICMP", "notICMP": "NotICMP", "http": "HTTP",
    "preDNAT": "PreDNAT",
})

# Protocol names exactly as Calico spells them (validator.go protocolRegex: case matters).
PROTOCOL_NAMES = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
# The protocols that carry ports, by name and number (numorstring.Protocol.SupportsPorts).
PORT_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP", 6, 17, 132})

_PORT_NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_PORT_RANGE_RE = re.compile(r"^(\d+):(\d+)$")
_DIGITS_RE = re.compile(r"^\d+$")


class PortRange(NamedTuple):
    """An inclusive range of port numbers; a single port has first == last."""

    first: int
    last: int


def parse_port(value: int | str) -> PortRange | str:
    """A stored or written port: an int, "80", "1000:2000", or a named port (the str returned).

    Raises ValueError with numorstring's wording (`api/pkg/lib/numorstring/port.go`) and the
    validator's range message for 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"invalid port format ({value!r}): use a number, 'first:last' or a name")
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise ValueError("port range invalid, port number must be between 1 and 65535")
        return PortRange(value, value)
    if _DIGITS_RE.match(value):
        num = int(value)
        if num > 65535:
            raise ValueError(f"invalid port format ({value})")
        return parse_port(num)
    m = _PORT_RANGE_RE.match(value)
    if m:
        first, last = int(m[1]), int(m[2])
        if first > 65535:
            raise ValueError(f"invalid minimum port number in range ({value})")
        if last > 65535:
            raise ValueError(f"invalid maximum port number in range ({value})")
        if first > last:
            raise ValueError(f"minimum port number ({first}) is greater than maximum port "
                             f"number ({last}) in port range")
        if first < 1:
            raise ValueError("port range invalid, port number must be between 1 and 65535")
        return PortRange(first, last)
    if not _PORT_NAME_RE.match(value):
        raise ValueError(f"invalid name for named port ({value})")
    return value


def _stored_port(value: Any) -> int | str:
    """A port in Calico's JSON form: 80, "1000:2000" or "http"."""
    port = parse_port(value)
    if isinstance(port, str):
        return port
    return port.first if port.first == port.last else f"{port.first}:{port.last}"


def _stored_protocol(value: Any) -> int | str:
    """A protocol as Calico stores it: one of PROTOCOL_NAMES, or a number 1-255."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("protocol must be a name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) "
                         "or a number 1-255")
    # A digit string is a number, as numorstring.Uint8OrString reads it.
    if isinstance(value, str) and _DIGITS_RE.match(value) and int(value) <= 255:
        value = int(value)
    if isinstance(value, int):
        if not 1 <= value <= 255:
            raise ValueError("protocol number invalid")
        return value
    name: str = value
    if name not in PROTOCOL_NAMES:
        raise ValueError("protocol name invalid")
    return name


def _order_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("order must be a number")
    if not math.isfinite(value):
        raise ValueError("order must be a finite number")
    return float(value)


def _order_json(value: float) -> int | float:
    # Go's encoding/json writes float64 100 as `100`: keep the stored bytes Calico's.
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _rule_net(value: Any) -> str:
    """A rule's nets/notNets entry: a strictly masked CIDR or an address (validator `net`)."""
    if not isinstance(value, str):
        raise ValueError("invalid CIDR")
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValueError("invalid CIDR") from None


def _set_net(value: Any) -> str:
    """A network set entry: a CIDR (host bits allowed, as validator `cidr`) or an address."""
    if not isinstance(value, str):
        raise ValueError("invalid CIDR")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("invalid CIDR") from None


PortValue = Annotated[int | str, PlainValidator(_stored_port)]
ProtocolValue = Annotated[int | str, PlainValidator(_stored_protocol)]
Order = Annotated[float, PlainValidator(_order_value), PlainSerializer(_order_json)]
RuleNet = Annotated[str, PlainValidator(_rule_net)]
SetNet = Annotated[str, PlainValidator(_set_net)]


def _selector(value: str | None) -> str | None:
    if value is not None and len(value) > 1024:
        raise ValueError("selector must be at most 1024 characters")
    return check_selector(value)


Selector = Annotated[str, PlainValidator(lambda v: _selector(_require_str(v)))]


def _require_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


# --- rules --------------------------------------------------------------------------


class ICMPFields(StrictModel):
    type: int | None = None
    code: int | None = None


class ServiceAccountMatch(StrictModel):
    names: list[str] | None = None
    selector: Selector | None = None


class ServiceMatch(StrictModel):
    name: str | None = None
    namespace: str | None = None


class EntityRule(StrictModel):
    nets: list[RuleNet] | None = None
    notNets: list[RuleNet] | None = None
    selector: Selector | None = None
    notSelector: Selector | None = None
    namespaceSelector: Selector | None = None
    serviceAccounts: ServiceAccountMatch | None = None
    services: ServiceMatch | None = None
    ports: list[PortValue] | None = None
    notPorts: list[PortValue] | None = None

    def is_empty(self) -> bool:
        return not self.model_fields_set or self == EntityRule()


class HTTPPath(StrictModel):
    exact: str | None = None
    prefix: str | None = None


class HTTPMatch(StrictModel):
    methods: list[str] | None = None
    paths: list[HTTPPath] | None = None


class RuleMetadata(StrictModel):
    annotations: dict[str, str] | None = None


class Rule(StrictModel):
    action: Action
    ipVersion: Literal[4, 6] | None = None
    protocol: ProtocolValue | None = None
    notProtocol: ProtocolValue | None = None
    icmp: ICMPFields | None = None
    notICMP: ICMPFields | None = None
    source: EntityRule = Field(default_factory=EntityRule)
    destination: EntityRule = Field(default_factory=EntityRule)
    http: HTTPMatch | None = None
    metadata: RuleMetadata | None = None

    def dump(self) -> dict[str, Any]:
        doc = super().dump()
        # Calico omits an empty source/destination (`json:",omitzero"`).
        for side in ("source", "destination"):
            if not doc.get(side):
                doc.pop(side, None)
        return doc


# --- policies -----------------------------------------------------------------------


def default_types(ingress: list[Rule], egress: list[Rule]) -> list[PolicyType]:
    """Calico's `types` for a policy that gives none (api/pkg/defaults/networkpolicy.go):
    Ingress when there are no egress rules (also with no rules at all), Egress when there
    are only egress rules, both when there are both."""
    if not egress:
        return ["Ingress"]
    if not ingress:
        return ["Egress"]
    return ["Ingress", "Egress"]


class _PolicySpecBase(StrictModel):
    tier: str = DEFAULT_TIER
    order: Order | None = None
    selector: Selector = "all()"
    types: list[PolicyType] = Field(default_factory=list)
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    serviceAccountSelector: Selector | None = None
    performanceHints: list[Literal["AssumeNeededOnEveryNode"]] | None = None

    @model_validator(mode="after")
    def _defaults(self) -> Any:
        if not self.tier:
            self.tier = DEFAULT_TIER
        if not self.selector.strip():
            self.selector = "all()"
        if not self.types:
            self.types = default_types(self.ingress, self.egress)
        return self

    def dump_rules(self, doc: dict[str, Any]) -> dict[str, Any]:
        # Rules dump through Rule.dump so an empty source/destination is left out.
        for direction in ("ingress", "egress"):
            rules: list[Rule] = getattr(self, direction)
            if rules:
                doc[direction] = [r.dump() for r in rules]
            else:
                doc.pop(direction, None)
        return doc


class NetworkPolicySpec(_PolicySpecBase):
    pass


class GlobalNetworkPolicySpec(_PolicySpecBase):
    namespaceSelector: Selector | None = None
    doNotTrack: bool | None = None
    preDNAT: bool | None = None
    applyOnForward: bool | None = None


class _TieredPolicy(Resource):
    """What NetworkPolicy and GlobalNetworkPolicy share: the tier label, rule dumping."""

    spec: _PolicySpecBase

    @model_validator(mode="after")
    def _tier_label(self) -> Any:
        labels = dict(self.metadata.labels or {})
        if labels.get(TIER_LABEL) != self.spec.tier:
            labels[TIER_LABEL] = self.spec.tier
            self.metadata.labels = labels
        return self

    def dump(self) -> dict[str, Any]:
        doc = super().dump()
        self.spec.dump_rules(doc["spec"])
        return doc


class NetworkPolicy(_TieredPolicy):
    kind_name: ClassVar[str] = "NetworkPolicy"
    plural: ClassVar[str] = "networkpolicies"
    aliases: ClassVar[tuple[str, ...]] = ("networkpolicy", "networkpolicies", "policy", "np",
                                          "policies", "pol", "pols")
    namespaced: ClassVar[bool] = True

    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)


class GlobalNetworkPolicy(_TieredPolicy):
    kind_name: ClassVar[str] = "GlobalNetworkPolicy"
    plural: ClassVar[str] = "globalnetworkpolicies"
    aliases: ClassVar[tuple[str, ...]] = ("globalnetworkpolicy", "globalnetworkpolicies",
                                          "gnp", "gnps")

    kind: Literal["GlobalNetworkPolicy"] = "GlobalNetworkPolicy"
    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)


# --- tiers, profiles, network sets ---------------------------------------------------


class TierSpec(StrictModel):
    order: Order | None = None
    defaultAction: Literal["Deny", "Pass"] | None = None

    @property
    def default_action(self) -> Literal["Deny", "Pass"]:
        """What ends the tier for an endpoint a policy of it applied to (Calico: Deny)."""
        return self.defaultAction or "Deny"


class Tier(Resource):
    kind_name: ClassVar[str] = "Tier"
    plural: ClassVar[str] = "tiers"
    aliases: ClassVar[tuple[str, ...]] = ("tier", "tiers")

    kind: Literal["Tier"] = "Tier"
    spec: TierSpec = Field(default_factory=TierSpec)


def default_tier() -> Tier:
    """The `default` tier, which exists even when nothing is stored for it."""
    return Tier(metadata=ObjectMeta(name=DEFAULT_TIER),
                spec=TierSpec(order=DEFAULT_TIER_ORDER, defaultAction="Deny"))


class ProfileSpec(StrictModel):
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    labelsToApply: dict[str, str] | None = None

    @field_validator("labelsToApply")
    @classmethod
    def _labels(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        return ObjectMeta._labels(labels)  # the same rules as metadata.labels


class Profile(Resource):
    kind_name: ClassVar[str] = "Profile"
    plural: ClassVar[str] = "profiles"
    aliases: ClassVar[tuple[str, ...]] = ("profile", "profiles", "pro", "pros")

    kind: Literal["Profile"] = "Profile"
    spec: ProfileSpec = Field(default_factory=ProfileSpec)

    def dump(self) -> dict[str, Any]:
        doc = super().dump()
        for direction in ("ingress", "egress"):
            rules: list[Rule] = getattr(self.spec, direction)
            if rules:
                doc["spec"][direction] = [r.dump() for r in rules]
            else:
                doc["spec"].pop(direction, None)
        return doc


class NetworkSetSpec(StrictModel):
    nets: list[SetNet] = Field(default_factory=list)


class GlobalNetworkSetSpec(StrictModel):
    nets: list[SetNet] = Field(default_factory=list)


class NetworkSet(Resource):
    kind_name: ClassVar[str] = "NetworkSet"
    plural: ClassVar[str] = "networksets"
    aliases: ClassVar[tuple[str, ...]] = ("networkset", "networksets", "netsets")
    namespaced: ClassVar[bool] = True

    kind: Literal["NetworkSet"] = "NetworkSet"
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)


class GlobalNetworkSet(Resource):
    kind_name: ClassVar[str] = "GlobalNetworkSet"
    plural: ClassVar[str] = "globalnetworksets"
    aliases: ClassVar[tuple[str, ...]] = ("globalnetworkset", "globalnetworksets",
                                          "gnetsets")

    kind: Literal["GlobalNetworkSet"] = "GlobalNetworkSet"
    spec: GlobalNetworkSetSpec = Field(default_factory=GlobalNetworkSetSpec)


POLICY_KINDS: tuple[type[Resource], ...] = (
    NetworkPolicy, GlobalNetworkPolicy, Tier, Profile, NetworkSet, GlobalNetworkSet)
