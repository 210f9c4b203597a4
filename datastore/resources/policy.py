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
  set to the tier, as libcalico-go's defaulting does on create and update; a Tier
  without `order` or `defaultAction` gets 1000000 and Deny (`DefaultTierFields`);
- values are stored canonically: protocols by Calico's name or as a number, ports
  as an int, "first:last" or a port name (Calico's own JSON for numorstring.Port),
  CIDRs with their prefix, and keys in the order of Calico's Go structs;
- names follow the rules of Calico v3.32 and later, where a policy's datastore
  name is its plain name (no `<tier>.` prefix; see docs/ctl.md).
"""

from __future__ import annotations

import ipaddress
import math
import re
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from .. import selector as selectors
from ..errors import FieldError
from . import base
from .base import (
    ObjectMeta,
    Resource,
    StrictModel,
    check_annotations,
    check_selector,
)

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
        raise ValueError("protocol name invalid: use one of TCP, UDP, ICMP, ICMPv6, SCTP, "
                         "UDPLite (case matters) or a number 1-255")
    return name


def _order_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("order must be a number")
    if not math.isfinite(value):
        raise ValueError("order must be a finite number")
    return float(value)


def _order_json(value: float) -> int | float:
    # Go's encoding/json writes float64 100 as `100` (plain digits below 1e21): keep the
    # stored bytes Calico's.
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def go_float(value: float | None) -> str:
    """A float as Go's fmt %v prints it (calicoctl's ORDER column): the shortest digits that
    read back, in exponent form when the exponent is below -4 or 6 and above (strconv 'g'
    with shortest precision), so 1000000 prints as 1e+06."""
    if value is None:
        return "<nil>"  # what text/template prints for a nil *float64 (fmt of a nil pointer)
    if value == 0:
        return "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent  # where the decimal point falls in `digits`
    exp = point - 1
    minus = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return minus + digits + "0" * (point - len(digits))
    return f"{minus}{digits[:point]}.{digits[point:]}"


def _rule_net(value: Any) -> str:
    """A rule's nets/notNets entry: a strictly masked CIDR with its prefix length.

    Calico's `net` tag would take a bare address, but validateRule parses every entry
    with net.ParseCIDR, so a rule needs the prefix ("10.0.0.1/32").
    """
    if not isinstance(value, str) or "/" not in value:
        raise ValueError("invalid CIDR")
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        try:
            masked = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError("invalid CIDR") from None
        raise ValueError(f"invalid CIDR: host bits set, the network is {masked}") from None


def _set_net(value: Any) -> str:
    """A network set entry: a CIDR (host bits allowed, as the `cidr` tag) or an address."""
    if not isinstance(value, str):
        raise ValueError("invalid CIDR")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("invalid CIDR") from None


def _selector(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("selector must be a string")
    if len(value) > MAX_SELECTOR_LENGTH:
        raise ValueError(f"selector must be at most {MAX_SELECTOR_LENGTH} characters")
    check_selector(value)
    return value


def _icmp_type(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 254:
        raise ValueError("ICMP type must be an integer between 0 and 254")
    return value


def _icmp_code(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError("ICMP code must be an integer between 0 and 255")
    return value


MAX_SELECTOR_LENGTH = 1024
MAX_RULES = 1024  # per direction
MAX_NETS = 256
MAX_PORTS = 50

PortValue = Annotated[int | str, PlainValidator(_stored_port)]
ProtocolValue = Annotated[int | str, PlainValidator(_stored_protocol)]
Order = Annotated[float, PlainValidator(_order_value), PlainSerializer(_order_json)]
RuleNet = Annotated[str, PlainValidator(_rule_net)]
SetNet = Annotated[str, PlainValidator(_set_net)]
Selector = Annotated[str, PlainValidator(_selector)]
ICMPType = Annotated[int, PlainValidator(_icmp_type)]
ICMPCode = Annotated[int, PlainValidator(_icmp_code)]


# --- rules --------------------------------------------------------------------------


class ICMPFields(StrictModel):
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"type", "code"})  # pointers

    type: ICMPType | None = None
    code: ICMPCode | None = None

    @model_validator(mode="after")
    def _code_needs_type(self) -> ICMPFields:
        if self.code is not None and self.type is None:
            raise ValueError("ICMP code specified without an ICMP type")
        return self


class ServiceAccountMatch(StrictModel):
    names: list[str] | None = None
    selector: Selector | None = None


class ServiceMatch(StrictModel):
    name: str | None = None
    namespace: str | None = None

    @field_validator("name", "namespace")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return base.check_subdomain(value) if value else value


# Fields are declared in the order of Calico's Go structs, so the stored JSON has
# Calico's key order too.


class EntityRule(StrictModel):
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"services", "serviceAccounts"})  # pointers

    nets: list[RuleNet] | None = Field(default=None, max_length=MAX_NETS)
    selector: Selector | None = None
    namespaceSelector: Selector | None = None
    services: ServiceMatch | None = None
    ports: list[PortValue] | None = Field(default=None, max_length=MAX_PORTS)
    notNets: list[RuleNet] | None = Field(default=None, max_length=MAX_NETS)
    notSelector: Selector | None = None
    notPorts: list[PortValue] | None = Field(default=None, max_length=MAX_PORTS)
    serviceAccounts: ServiceAccountMatch | None = None


class HTTPPath(StrictModel):
    exact: str | None = Field(default=None, max_length=1024)
    prefix: str | None = Field(default=None, max_length=1024)


class HTTPMatch(StrictModel):
    methods: list[str] | None = Field(default=None, max_length=20)
    paths: list[HTTPPath] | None = Field(default=None, max_length=20)


class RuleMetadata(StrictModel):
    annotations: dict[str, str] | None = None

    @field_validator("annotations")
    @classmethod
    def _keys(cls, annotations: dict[str, str] | None) -> dict[str, str] | None:
        return check_annotations(annotations)  # validateRuleMetadata: as ObjectMeta's


class Rule(StrictModel):
    # policy_common.go: action has no omitempty, these are pointers; source and
    # destination are `omitzero` structs, left out when nothing in them is set.
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({
        "action", "ipVersion", "protocol", "icmp", "notProtocol", "notICMP", "http",
        "metadata"})

    action: Action
    ipVersion: Literal[4, 6] | None = None
    protocol: ProtocolValue | None = None
    icmp: ICMPFields | None = None
    notProtocol: ProtocolValue | None = None
    notICMP: ICMPFields | None = None
    source: EntityRule = Field(default_factory=EntityRule)
    destination: EntityRule = Field(default_factory=EntityRule)
    http: HTTPMatch | None = None
    metadata: RuleMetadata | None = None


# --- rule validation (libcalico-go validateRule, validateEntityRule, and the CEL rules) --

_PROTOCOL_PORTS_MSG = "rules that specify ports must set protocol to TCP or UDP or SCTP"
_NUMERIC_PORTS_MSG = ("rules with numeric port or port range must set protocol to TCP or UDP "
                      "or SCTP")
_GLOBAL_ONLY_IN_NS_SELECTOR = "global() can only be used in an EntityRule namespaceSelector"
_ICMP_NUMBERS = {"ICMP": 1, "ICMPv6": 58}


def _is_protocol(value: int | str | None, name: str) -> bool:
    return value is not None and value in (name, _ICMP_NUMBERS[name])


def _sides(rule: Rule) -> tuple[tuple[str, EntityRule], tuple[str, EntityRule]]:
    return (("Source", rule.source), ("Destination", rule.destination))


def _port_errors(rule: Rule, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for side_name, side in _sides(rule):
        for field in ("ports", "notPorts"):
            ports: list[int | str] = getattr(side, field) or []
            if not ports:
                continue
            where = f"{path}.{side_name}.{field[0].upper()}{field[1:]}"
            shown = ",".join(str(p) for p in ports)
            if rule.protocol is None:
                # Named ports are resolved per endpoint and protocol, so they may go without.
                if not all(isinstance(parse_port(p), str) for p in ports):
                    errs.append(FieldError(where, shown, _NUMERIC_PORTS_MSG))
            elif rule.protocol not in PORT_PROTOCOLS:
                errs.append(FieldError(where, shown, _PROTOCOL_PORTS_MSG))
    return errs


def _net_errors(rule: Rule, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: set[int] = set()
    for side_name, side in _sides(rule):
        for field in ("nets", "notNets"):
            nets: list[str] = getattr(side, field) or []
            if not nets:
                continue
            where = f"{path}.{side_name}.{field[0].upper()}{field[1:]}"
            versions = {ipaddress.ip_network(n).version for n in nets}
            if field == "notNets":
                for net in nets:
                    if ipaddress.ip_network(net).prefixlen == 0:
                        errs.append(FieldError(where, net, "catch-all CIDR in negation creates "
                                               "logical contradiction (matches no traffic)"))
            if rule.ipVersion is not None and versions != {rule.ipVersion}:
                errs.append(FieldError(where, ",".join(nets),
                                       "rule IP version doesn't match CIDR version"))
            elif len(versions | seen) > 1:
                errs.append(FieldError(where, ",".join(nets),
                                       "rule contains both IPv4 and IPv6 CIDRs"))
            seen |= versions
    return errs


def _entity_errors(side: EntityRule, where: str, is_destination: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    if side.selector and "global(" in side.selector:
        errs.append(FieldError(f"{where}.Selector", side.selector, _GLOBAL_ONLY_IN_NS_SELECTOR))
    ns_sel = side.namespaceSelector
    if ns_sel and "global(" in ns_sel and str(selectors.parse(ns_sel)) != "global()":
        errs.append(FieldError(f"{where}.NamespaceSelector", ns_sel,
                               "global() cannot be combined with other selectors"))
    svc = side.services
    if svc is not None:
        def conflict(field: str, value: object, message: str) -> None:
            errs.append(FieldError(f"{where}.{field}", value, message))
        if not svc.name:
            conflict("Services.Name", "", "services must specify a service name")
        if ns_sel:
            conflict("NamespaceSelector", ns_sel,
                     "cannot specify NamespaceSelector and Services on the same rule")
        if side.serviceAccounts is not None:
            conflict("ServiceAccounts", "",
                     "cannot specify ServiceAccounts and Services on the same rule")
        if side.selector or side.notSelector:
            conflict("Selector", side.selector or side.notSelector,
                     "cannot specify Selector/NotSelector and Services on the same rule")
        if side.nets or side.notNets:
            conflict("Nets", ",".join(side.nets or side.notNets or ()),
                     "cannot specify Nets/NotNets and Services on the same rule")
        if is_destination and (side.ports or side.notPorts):
            conflict("Ports", ",".join(str(p) for p in side.ports or side.notPorts or ()),
                     "ports and notPorts cannot be specified with services")
    return errs


def rule_errors(rule: Rule, path: str) -> list[FieldError]:
    """Everything wrong with one rule that no single field shows. `path` names the rule,
    e.g. "NetworkPolicy.Spec.Ingress[0]". Pure."""
    errs = _port_errors(rule, path) + _net_errors(rule, path)
    if rule.icmp is not None and not (_is_protocol(rule.protocol, "ICMP")
                                      or _is_protocol(rule.protocol, "ICMPv6")):
        errs.append(FieldError(f"{path}.ICMP", rule.icmp.model_dump(exclude_none=True),
                               "ICMP fields require protocol to be ICMP or ICMPv6"))
    for field, proto in (("Protocol", rule.protocol), ("NotProtocol", rule.notProtocol)):
        if _is_protocol(proto, "ICMP") and rule.ipVersion not in (None, 4):
            errs.append(FieldError(f"{path}.{field}", proto, "protocol ICMP requires ipVersion 4"))
        if _is_protocol(proto, "ICMPv6") and rule.ipVersion not in (None, 6):
            errs.append(FieldError(f"{path}.{field}", proto,
                                   "protocol ICMPv6 requires ipVersion 6"))
    if rule.http is not None:
        errs += _http_errors(rule, path)
    for side_name, side in _sides(rule):
        errs += _entity_errors(side, f"{path}.{side_name}", side_name == "Destination")
    return errs


def _http_errors(rule: Rule, path: str) -> list[FieldError]:
    http = rule.http
    assert http is not None
    errs: list[FieldError] = []
    if rule.action != "Allow":
        errs.append(FieldError(f"{path}.HTTP", "", "HTTP match is only valid on Allow rules"))
    if rule.protocol not in (None, "TCP", 6):
        errs.append(FieldError(f"{path}.Protocol", rule.protocol,
                               "rules with HTTP match must have protocol TCP or unset"))
    methods = http.methods or []
    if len(set(methods)) != len(methods):
        errs.append(FieldError(f"{path}.HTTP.Methods", ",".join(methods),
                               "Invalid methods (duplicates)"))
    for i, match in enumerate(http.paths or ()):
        where = f"{path}.HTTP.Paths[{i}]"
        if match.exact and match.prefix:
            errs.append(FieldError(where, match.exact,
                                   "Invalid path match. Both 'exact' and 'prefix' are set"))
            continue
        value = match.exact or match.prefix
        if not value:
            errs.append(FieldError(where, "", "Invalid path match. Either 'exact' or 'prefix' "
                                   "must be set"))
        elif not value.startswith("/") or any(c in value for c in "? #"):
            errs.append(FieldError(where, value, f"Invalid path {value}. (must start with `/` "
                                   "and not contain `?` or `#`"))
    return errs


def rules_errors(kind: str, ingress: list[Rule], egress: list[Rule],
                 global_services: bool = False) -> list[FieldError]:
    """Every rule of a policy or profile, with the direction rules Calico adds on top
    (validateNetworkPolicySpec / validateGlobalNetworkPolicySpec). Pure."""
    errs: list[FieldError] = []
    for direction, rules in (("Ingress", ingress), ("Egress", egress)):
        for i, rule in enumerate(rules):
            path = f"{kind}.Spec.{direction}[{i}]"
            errs += rule_errors(rule, path)
            # Services pick the peer: the source of ingress, the destination of egress.
            peer_side, own_side = (("Source", "Destination") if direction == "Ingress"
                                   else ("Destination", "Source"))
            peer: EntityRule = getattr(rule, peer_side.lower())
            own: EntityRule = getattr(rule, own_side.lower())
            if own.services is not None:
                errs.append(FieldError(
                    f"{path}.{own_side}.Services", own.services.name,
                    f"not allowed in {direction.lower()} rule {own_side.lower()}"))
            if global_services and peer.services is not None and not peer.services.namespace:
                # A GlobalNetworkPolicy has no namespace to find the service in.
                errs.append(FieldError(f"{path}.{peer_side}.Services.Namespace", "",
                                       "must specify a namespace"))
            if direction == "Egress" and rule.http is not None:
                errs.append(FieldError(f"{path}.HTTP", "", "not allowed in egress rule"))
    return errs


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


class _RulesSpec(StrictModel):
    # The JSON key order of the Go struct, where inheritance cannot declare it.
    json_order: ClassVar[tuple[str, ...]] = ()

    ingress: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    egress: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)

    @model_serializer(mode="wrap")
    def _go_key_order(self, handler: SerializerFunctionWrapHandler) -> Any:
        doc = handler(self)
        if not isinstance(doc, dict):
            return doc
        rank = {key: i for i, key in enumerate(self.json_order)}
        return dict(sorted(doc.items(), key=lambda item: rank.get(item[0], len(rank))))


class _PolicySpecBase(_RulesSpec):
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"order"})  # a *float64

    tier: str = DEFAULT_TIER
    order: Order | None = None
    selector: Selector = "all()"
    types: list[PolicyType] = Field(default_factory=list)
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

    def spec_errors(self, kind: str) -> list[FieldError]:
        errs: list[FieldError] = []
        if not TIER_NAME_RE.match(self.tier) or len(self.tier) > 63:
            errs.append(FieldError(f"{kind}.Spec.Tier", self.tier, _TIER_NAME_MSG))
        for t in ("Ingress", "Egress"):
            if self.types.count(t) > 1:
                errs.append(FieldError(f"{kind}.Spec.Types", ",".join(self.types),
                                       f"'{t}' type specified more than once"))
        for field in ("selector", "serviceAccountSelector", "namespaceSelector"):
            value = getattr(self, field, None)
            if value and "global(" in value:
                errs.append(FieldError(f"{kind}.Spec.{field[0].upper()}{field[1:]}", value,
                                       _GLOBAL_ONLY_IN_NS_SELECTOR))
        hints = self.performanceHints or []
        if len(set(hints)) != len(hints):
            errs.append(FieldError(f"{kind}.Spec.PerformanceHints", ",".join(hints),
                                   "performanceHints must not repeat a hint"))
        return errs


class NetworkPolicySpec(_PolicySpecBase):
    json_order: ClassVar[tuple[str, ...]] = (
        "tier", "order", "ingress", "egress", "selector", "types", "serviceAccountSelector",
        "performanceHints")


class GlobalNetworkPolicySpec(_PolicySpecBase):
    json_order: ClassVar[tuple[str, ...]] = (
        "tier", "order", "ingress", "egress", "selector", "types", "doNotTrack", "preDNAT",
        "applyOnForward", "serviceAccountSelector", "namespaceSelector", "performanceHints")

    namespaceSelector: Selector | None = None
    doNotTrack: bool | None = None
    preDNAT: bool | None = None
    applyOnForward: bool | None = None

    def spec_errors(self, kind: str) -> list[FieldError]:
        errs = super().spec_errors(kind)
        path = f"{kind}.Spec"
        if self.preDNAT and self.doNotTrack:
            errs.append(FieldError(f"{path}.PreDNAT", True,
                                   "preDNAT and doNotTrack cannot both be true"))
        if self.preDNAT and self.egress:
            errs.append(FieldError(f"{path}.Egress", f"{len(self.egress)} rule(s)",
                                   "preDNAT policy cannot have any egress rules"))
        elif self.preDNAT and "Egress" in self.types:
            errs.append(FieldError(f"{path}.Types", ",".join(self.types),
                                   "preDNAT policy cannot have 'Egress' type"))
        if (self.preDNAT or self.doNotTrack) and not self.applyOnForward:
            errs.append(FieldError(f"{path}.ApplyOnForward", False, "applyOnForward must be "
                                   "true if either preDNAT or doNotTrack is true"))
        return errs


# Policy names of Calico v3.32+ (validator.go networkPolicyNameRegex,
# globalNetworkPolicyNameRegex): a DNS-1123 label, optionally with one dotted prefix;
# NetworkPolicy also takes the `knp.default.` / `ossg.default.` names of converted
# Kubernetes policies.
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\." + _LABEL + r")*"
NETWORK_POLICY_NAME_RE = re.compile(
    rf"^(({_LABEL})(\.{_LABEL})?|((?:knp|ossg)\.default\.({_SUBDOMAIN})))$")
GLOBAL_NETWORK_POLICY_NAME_RE = re.compile(rf"^({_LABEL}\.)?{_LABEL}$")
TIER_NAME_RE = re.compile(rf"^{_LABEL}$")
_POLICY_NAME_MSG = ("name must consist of lower case alphanumeric characters or '-', with at "
                    "most one '.' (regex: " + _LABEL + ")")
_TIER_NAME_MSG = f"name must consist of lower case alphanumeric characters or '-' (regex: {_LABEL})"


class _TieredPolicy(Resource):
    """What NetworkPolicy and GlobalNetworkPolicy share: the tier label and validation."""

    name_re: ClassVar[re.Pattern[str]] = GLOBAL_NETWORK_POLICY_NAME_RE
    spec: _PolicySpecBase

    @model_validator(mode="after")
    def _tier_label(self) -> Any:
        labels = dict(self.metadata.labels or {})
        if labels.get(TIER_LABEL) != self.spec.tier:
            labels[TIER_LABEL] = self.spec.tier
            self.metadata.labels = labels
        return self

    def validate_semantics(self) -> list[FieldError]:
        errs: list[FieldError] = []
        if not self.name_re.match(self.name):
            errs.append(FieldError(f"{self.kind_name}.Metadata.Name", self.name,
                                   _POLICY_NAME_MSG))
        errs += self.spec.spec_errors(self.kind_name)
        errs += rules_errors(self.kind_name, self.spec.ingress, self.spec.egress,
                             global_services=not self.namespaced)
        return errs


class NetworkPolicy(_TieredPolicy):
    kind_name: ClassVar[str] = "NetworkPolicy"
    plural: ClassVar[str] = "networkpolicies"
    aliases: ClassVar[tuple[str, ...]] = ("networkpolicy", "networkpolicies", "policy", "np",
                                          "policies", "pol", "pols")
    namespaced: ClassVar[bool] = True
    name_re: ClassVar[re.Pattern[str]] = NETWORK_POLICY_NAME_RE

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
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"order", "defaultAction"})  # pointers

    order: Order | None = None
    defaultAction: Literal["Deny", "Pass"] | None = None

    @model_validator(mode="after")
    def _defaults(self) -> TierSpec:
        # libcalico-go's DefaultTierFields (lib/resources/tier.go): since v3.32 a tier without
        # an order sorts with the default tier (1,000,000, ties by name), and ends in Deny.
        if self.order is None:
            self.order = DEFAULT_TIER_ORDER
        if self.defaultAction is None:
            self.defaultAction = "Deny"
        return self


# The tiers Calico creates itself, and what their order and defaultAction must be
# (api/pkg/apis/projectcalico/v3/tier.go, the CEL rules on Tier).
PROTECTED_TIERS: dict[str, tuple[float, str]] = {
    "kube-admin": (1_000.0, "Pass"),
    DEFAULT_TIER: (DEFAULT_TIER_ORDER, "Deny"),
    "kube-baseline": (10_000_000.0, "Pass"),
}


class Tier(Resource):
    kind_name: ClassVar[str] = "Tier"
    plural: ClassVar[str] = "tiers"
    aliases: ClassVar[tuple[str, ...]] = ("tier", "tiers")

    # tier.go: Status is a TierStatus struct (`json:"status,omitempty"`), so Go always
    # prints it, {} while nothing has set its conditions (nothing in tortie does).
    go_unset: ClassVar[dict[str, Any]] = {"status": {}}

    kind: Literal["Tier"] = "Tier"
    spec: TierSpec = Field(default_factory=TierSpec)
    status: dict[str, Any] | None = None

    def validate_semantics(self) -> list[FieldError]:
        errs: list[FieldError] = []
        if len(self.name) > 63:
            errs.append(FieldError("Tier.Metadata.Name", self.name,
                                   f"name is too long by {len(self.name) - 63} bytes"))
        elif not TIER_NAME_RE.match(self.name):
            errs.append(FieldError("Tier.Metadata.Name", self.name, _TIER_NAME_MSG))
        if self.name in PROTECTED_TIERS:
            order, action = PROTECTED_TIERS[self.name]
            if self.spec.defaultAction != action:
                errs.append(FieldError("Tier.Spec.DefaultAction", self.spec.defaultAction,
                                       f"The '{self.name}' tier must have default action "
                                       f"'{action}'"))
            if self.spec.order != order:
                errs.append(FieldError("Tier.Spec.Order", go_float(self.spec.order),
                                       f"{self.name} tier order must be {_order_json(order)}"))
        return errs


def default_tier() -> Tier:
    """The `default` tier, which exists even when nothing is stored for it."""
    return Tier(metadata=ObjectMeta(name=DEFAULT_TIER),
                spec=TierSpec(order=DEFAULT_TIER_ORDER, defaultAction="Deny"))


class ProfileSpec(_RulesSpec):
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

    def validate_semantics(self) -> list[FieldError]:
        return rules_errors("Profile", self.spec.ingress, self.spec.egress)


class NetworkSetSpec(StrictModel):
    nets: list[SetNet] = Field(default_factory=list)


class GlobalNetworkSetSpec(NetworkSetSpec):
    pass


# Calico sets this label itself on the endpoints of a namespace; a set may not claim it
# (validator.go validateNetworkSet / validateGlobalNetworkSet).
RESERVED_NAMESPACE_LABEL = "projectcalico.org/namespace"


class _NetworkSetBase(Resource):
    def validate_semantics(self) -> list[FieldError]:
        if RESERVED_NAMESPACE_LABEL in (self.metadata.labels or {}):
            return [FieldError(f"{self.kind_name}.Metadata.Labels", RESERVED_NAMESPACE_LABEL,
                               f"{RESERVED_NAMESPACE_LABEL} is not a valid label name")]
        return []


class NetworkSet(_NetworkSetBase):
    kind_name: ClassVar[str] = "NetworkSet"
    plural: ClassVar[str] = "networksets"
    aliases: ClassVar[tuple[str, ...]] = ("networkset", "networksets", "netsets")
    namespaced: ClassVar[bool] = True

    kind: Literal["NetworkSet"] = "NetworkSet"
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)


class GlobalNetworkSet(_NetworkSetBase):
    kind_name: ClassVar[str] = "GlobalNetworkSet"
    plural: ClassVar[str] = "globalnetworksets"
    aliases: ClassVar[tuple[str, ...]] = ("globalnetworkset", "globalnetworksets", "gnetsets")

    kind: Literal["GlobalNetworkSet"] = "GlobalNetworkSet"
    spec: GlobalNetworkSetSpec = Field(default_factory=GlobalNetworkSetSpec)
