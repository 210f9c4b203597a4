"""Kubernetes objects to Calico documents, exactly as Calico converts them.

Owns the conversion of `networking.k8s.io/v1` NetworkPolicy, `v1` Namespace and
`v1` ServiceAccount into the `projectcalico.org/v3` NetworkPolicy and Profiles
that calico-kube-controllers writes in etcd mode (projectcalico/calico
`libcalico-go/lib/backend/k8s/conversion/conversion.go`: K8sNetworkPolicyToCalico,
NamespaceToProfile, ServiceAccountToProfile; `kube-controllers/pkg/converter/`).
`ctl apply` uses it for plain Kubernetes manifests; a kube-controllers port will
use it for watched objects.

Invariants:
- Pure: no I/O, clock or logging; the input is never changed and the output
  shares no mutable object with it.
- The input is validated as the Kubernetes API server would before anything is
  converted: a malformed object raises one KubernetesObjectError naming the
  field and the value, and nothing is returned. (Calico itself drops a rule it
  cannot convert and keeps the rest; an object the API server would refuse
  never reaches it, so refusing is what a cluster does.)
- The API server's defaulting is applied first: NetworkPolicy policyTypes,
  port protocol TCP, the `kubernetes.io/metadata.name` namespace label.
- The output is plain JSON-ready dicts in Calico's field names, built in Go's
  field order with map keys sorted, so `json.dumps` of a document gives the bytes
  Calico's encoder would (before the store adds uid and creationTimestamp).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

from datastore.names import DNS_LABEL_RE, LABEL_NAME_RE, LABEL_VALUE_RE, NAME_RE

# The pod endpoint rule lives in a module light enough for the CNI plugin (re-exported
# in __all__ for ctl and the tests that know it from here).
from .pod_endpoint import (
    NAMESPACE_PROFILE_PREFIX,
    ORCHESTRATOR_LABEL,
    SERVICE_ACCOUNT_PROFILE_PREFIX,
    pod_endpoint_labels,
    pod_endpoint_profiles,
)

__all__ = [
    "KUBERNETES_KINDS",
    "KubernetesObjectError",
    "k8s_network_policy_to_calico",
    "k8s_selector_to_calico",
    "kubernetes_object_to_calico",
    "namespace_to_profile",
    "pod_endpoint_labels",
    "pod_endpoint_profiles",
    "service_account_to_profile",
    "simplify_ports",
]

CALICO_API_VERSION: Final = "projectcalico.org/v3"

# conversion/constants.go and the v3 API's label names.
NAMESPACE_LABEL_PREFIX: Final = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX: Final = "pcsa."
NAME_LABEL: Final = "projectcalico.org/name"
TIER_LABEL: Final = "projectcalico.org/tier"
# kube-controllers' KubernetesNetworkPolicyEtcdPrefix: keeps converted policies apart from
# Calico-native ones of the same name.
POLICY_NAME_PREFIX: Final = "knp.default."
# "We insert all the NetworkPolicy Policies at order 1000.0" (conversion.go). An int, so
# that json.dumps prints it as Go prints the float64: 1000.
POLICY_ORDER: Final = 1000
DEFAULT_TIER: Final = "default"
# The control plane labels every namespace with its own name (Kubernetes 1.22+), and the
# upstream e2e suite selects namespaces by it.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"

K8S_PROTOCOLS: Final = ("SCTP", "TCP", "UDP")
POLICY_TYPES: Final = ("Ingress", "Egress")
# A name this long or longer does not fit in a Calico name (253) once prefixed.
MAX_POLICY_NAME: Final = 253 - len(POLICY_NAME_PREFIX)

# Fields an object may carry; anything else is refused as the API server's strict field
# validation (kubectl's default) refuses it: a typo such as `form:` for `from:` would
# otherwise silently mean "from everywhere".
_META_FIELDS: Final = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
})
_POLICY_TOP: Final = frozenset({"apiVersion", "kind", "metadata", "spec"})
_POLICY_SPEC: Final = frozenset({"podSelector", "ingress", "egress", "policyTypes"})
_INGRESS_RULE: Final = frozenset({"from", "ports"})
_EGRESS_RULE: Final = frozenset({"to", "ports"})
_PEER: Final = frozenset({"podSelector", "namespaceSelector", "ipBlock"})
_IP_BLOCK: Final = frozenset({"cidr", "except"})
_PORT: Final = frozenset({"protocol", "port", "endPort"})
_SELECTOR: Final = frozenset({"matchLabels", "matchExpressions"})
_REQUIREMENT: Final = frozenset({"key", "operator", "values"})
_NAMESPACE_TOP: Final = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_SERVICE_ACCOUNT_TOP: Final = frozenset({
    "apiVersion", "kind", "metadata", "secrets", "imagePullSecrets",
    "automountServiceAccountToken",
})

# The characters Kubernetes' IsValidPortName allows (k8s.io/apimachinery/pkg/util/
# validation); its name and label patterns are datastore.names'.
_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")
# A CIDR as Go's net.ParseCIDR reads it: an address, "/", a decimal prefix length. Python's
# ip_network also takes a bare address or a netmask; those are refused here.
_CIDR_SHAPE = re.compile(r"^([0-9A-Fa-f:.]+)/([0-9]+)$")

_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc')"
)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
)
_QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345')"
)

MISSING: Final = object()  # the `value` of an error about a field that is absent


class KubernetesObjectError(ValueError):
    """One malformed field of a Kubernetes object, worded as the API server words it.

    `field` is the path ("spec.ingress[0].ports[1].port"), `value` what it holds
    (MISSING when it is absent), `reason` why it is refused; `kind` and `name`
    say which object, once known.
    """

    def __init__(
        self, field: str, value: object, reason: str, *, kind: str = "", name: str = ""
    ) -> None:
        super().__init__(field, value, reason)
        self.field = field
        self.value = value
        self.reason = reason
        self.kind = kind
        self.name = name

    def __str__(self) -> str:
        if self.value is MISSING:
            detail = f"{self.field}: Required value: {self.reason}"
        else:
            detail = f"{self.field}: Invalid value: {_show(self.value)}: {self.reason}"
        if not self.kind:
            return detail
        named = f' "{self.name}"' if self.name else ""
        return f"{self.kind}{named} is invalid: {detail}"


def _show(value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


@contextmanager
def _about(kind: str, doc: object) -> Iterator[None]:
    """Name the object in any KubernetesObjectError raised inside."""
    try:
        yield
    except KubernetesObjectError as err:
        err.kind = kind
        meta = doc.get("metadata") if isinstance(doc, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        err.name = name if isinstance(name, str) else ""
        raise


# --- Reading the input: shapes, unknown fields, Go's null = absent ----------------------


def _object(value: object, path: str, allowed: frozenset[str]) -> dict[str, Any]:
    """A JSON object with only `allowed` keys; keys holding null are dropped (Go: absent)."""
    if not isinstance(value, Mapping):
        raise KubernetesObjectError(path, value, "must be an object")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or key not in allowed:
            raise KubernetesObjectError(f"{path}.{key}" if path else str(key), key, "unknown field")
        if item is not None:
            out[key] = item
    return out


def _list(value: object, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise KubernetesObjectError(path, value, "must be a list")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise KubernetesObjectError(path, value, "must be a string")
    return value


def _integer(value: object, path: str) -> int:
    # bool is an int in Python, never in JSON.
    if not isinstance(value, int) or isinstance(value, bool):
        raise KubernetesObjectError(path, value, "must be an integer")
    return value


def _string_map(value: object, path: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise KubernetesObjectError(path, value, "must be an object")
    out: dict[str, str] = {}
    for key, item in value.items():
        _string(key, path)
        # YAML reads `version: 1` or `on: true` as a number or a boolean; Kubernetes wants
        # the string and refuses the object.
        out[key] = _string(item, f"{path}.{key}")
    return out


def _read_object(
    doc: object, api_version: str, kind: str, allowed: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(top level, metadata) of an object of this type, with a name.

    apiVersion and kind may be absent (list items from the API), never wrong.
    """
    if not isinstance(doc, Mapping):
        raise KubernetesObjectError("", doc, f"a {kind} must be an object")
    top = _object(doc, "", allowed)
    if top.get("apiVersion", api_version) != api_version:
        raise KubernetesObjectError("apiVersion", top["apiVersion"], f"must be {api_version}")
    if top.get("kind", kind) != kind:
        raise KubernetesObjectError("kind", top["kind"], f"must be {kind}")
    return top, _metadata(top)


# --- Names and labels, as the API server checks them ------------------------------------


def _check_format(value: str, path: str, limit: int, pattern: re.Pattern[str], message: str) -> None:
    """Kubernetes' two checks of a name or label: its length, then its characters."""
    if len(value) > limit:
        raise KubernetesObjectError(path, value, f"must be no more than {limit} characters")
    if not pattern.match(value):
        raise KubernetesObjectError(path, value, message)


def _check_dns_label(value: str, path: str) -> None:
    _check_format(value, path, 63, DNS_LABEL_RE, _DNS1123_LABEL_MSG)


def _check_dns_subdomain(value: str, path: str) -> None:
    _check_format(value, path, 253, NAME_RE, _DNS1123_SUBDOMAIN_MSG)


def _check_label_key(key: str, path: str) -> None:
    """A qualified name: an optional DNS subdomain and "/", then a name; errors show the key."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            raise KubernetesObjectError(path, key, "prefix part must be non-empty")
        if "/" in prefix:
            raise KubernetesObjectError(path, key, "a qualified name may contain at most one '/'")
        if len(prefix) > 253 or not NAME_RE.match(prefix):
            raise KubernetesObjectError(path, key, "prefix part " + _DNS1123_SUBDOMAIN_MSG)
    if not name:
        raise KubernetesObjectError(path, key, "name part must be non-empty")
    if len(name) > 63 or not LABEL_NAME_RE.match(name):
        reason = ("name part must be no more than 63 characters" if len(name) > 63
                  else _QUALIFIED_NAME_MSG)
        raise KubernetesObjectError(path, key, reason)


def _check_label_value(value: str, path: str) -> None:
    _check_format(value, path, 63, LABEL_VALUE_RE, _LABEL_VALUE_MSG)


def _labels(value: object, path: str) -> dict[str, str]:
    labels = _string_map(value, path)
    for key, item in labels.items():
        _check_label_key(key, path)
        _check_label_value(item, f"{path}.{key}")
    return labels


def _metadata(doc: Mapping[str, Any]) -> dict[str, Any]:
    """metadata with a valid name; labels and annotations checked for shape."""
    if "metadata" not in doc or doc["metadata"] is None:
        raise KubernetesObjectError("metadata.name", MISSING, "name or generateName is required")
    meta = _object(doc["metadata"], "metadata", _META_FIELDS)
    if not meta.get("name"):
        raise KubernetesObjectError("metadata.name", MISSING, "name or generateName is required")
    _string(meta["name"], "metadata.name")
    if "labels" in meta:
        meta["labels"] = _labels(meta["labels"], "metadata.labels")
    if "annotations" in meta:
        _string_map(meta["annotations"], "metadata.annotations")
    return meta


def _namespace_of(meta: Mapping[str, Any], default_namespace: str) -> str:
    namespace = _string(meta.get("namespace", default_namespace), "metadata.namespace")
    _check_dns_label(namespace, "metadata.namespace")
    return namespace


# --- Label selectors ---------------------------------------------------------------------


def _label_selector(value: object, path: str) -> dict[str, Any]:
    """A metav1.LabelSelector, checked as ValidateLabelSelector checks it."""
    selector = _object(value, path, _SELECTOR)
    if "matchLabels" in selector:
        selector["matchLabels"] = _labels(selector["matchLabels"], f"{path}.matchLabels")
    expressions = []
    for i, raw in enumerate(_list(selector.get("matchExpressions"), f"{path}.matchExpressions")):
        where = f"{path}.matchExpressions[{i}]"
        expression = _object(raw, where, _REQUIREMENT)
        key = _string(expression.get("key", ""), f"{where}.key")
        _check_label_key(key, f"{where}.key")
        operator = _string(expression.get("operator", ""), f"{where}.operator")
        values = [
            _string(v, f"{where}.values[{j}]")
            for j, v in enumerate(_list(expression.get("values"), f"{where}.values"))
        ]
        if operator in ("In", "NotIn"):
            if not values:
                raise KubernetesObjectError(
                    f"{where}.values", MISSING,
                    "must be specified when `operator` is 'In' or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                raise KubernetesObjectError(
                    f"{where}.values", values,
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        else:
            raise KubernetesObjectError(
                f"{where}.operator", operator,
                "not a valid selector operator (In, NotIn, Exists, DoesNotExist)")
        for j, v in enumerate(values):
            _check_label_value(v, f"{where}.values[{j}]")
        expressions.append({"key": key, "operator": operator, "values": values})
    selector["matchExpressions"] = expressions
    return selector


def k8s_selector_to_calico(selector: Mapping[str, Any] | None, *, pod: bool) -> str:
    """A (validated) Kubernetes label selector in Calico's syntax, as Calico prints it.

    conversion.go k8sSelectorToCalico: a pod selector always starts with the
    orchestrator clause, so it only ever matches Kubernetes pods; matchLabels
    follow with their keys sorted, then matchExpressions in their given order;
    terms are joined by " && ". A namespace selector that is absent is "" and
    one present but empty is "all()".
    """
    terms = [f"{ORCHESTRATOR_LABEL} == 'k8s'"] if pod else []
    if selector is None:
        return " && ".join(terms)
    match_labels: Mapping[str, str] = selector.get("matchLabels") or {}
    expressions: Sequence[Mapping[str, Any]] = selector.get("matchExpressions") or []
    if not pod and not match_labels and not expressions:
        return "all()"
    # Go's sort.Strings orders by bytes; label keys are ASCII, so str order is the same.
    terms.extend(f"{key} == '{match_labels[key]}'" for key in sorted(match_labels))
    for expression in expressions:
        key, operator = expression["key"], expression["operator"]
        values = "', '".join(expression.get("values") or [])
        if operator == "In":
            terms.append(f"{key} in {{ '{values}' }}")
        elif operator == "NotIn":
            terms.append(f"{key} not in {{ '{values}' }}")
        elif operator == "Exists":
            terms.append(f"has({key})")
        elif operator == "DoesNotExist":
            terms.append(f"! has({key})")
    return " && ".join(terms)


# --- Peers, ports and rules --------------------------------------------------------------


def _cidr(value: object, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = _string(value, path)
    shape = _CIDR_SHAPE.match(text)
    if shape is None:
        raise KubernetesObjectError(
            path, text, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    if len(shape.group(2)) > 1 and shape.group(2).startswith("0"):
        raise KubernetesObjectError(path, text, "must not have leading 0s in IP or prefix length")
    try:
        address = ipaddress.ip_address(shape.group(1))
        # Host bits are allowed (the API server accepts "10.10.1.12/24") and masked off, as
        # Calico's converter does with cnet.ParseCIDR(...).String().
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        if re.search(r"(^|[.:])0[0-9]", shape.group(1)):
            raise KubernetesObjectError(
                path, text, "must not have leading 0s in IP or prefix length") from None
        raise KubernetesObjectError(
            path, text, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise KubernetesObjectError(path, text, "must not have an IPv4-mapped IPv6 address")
    return network


def _peer_to_calico(raw: object, path: str) -> dict[str, Any]:
    """conversion.go k8sPeerToCalicoFields: an EntityRule's peer fields, in Go's order."""
    peer = _object(raw, path, _PEER)
    if not peer:
        raise KubernetesObjectError(path, MISSING, "must specify a peer")
    if "ipBlock" in peer:
        if len(peer) > 1:
            raise KubernetesObjectError(
                path, sorted(peer), "may not specify both ipBlock and another peer")
        block = _object(peer["ipBlock"], f"{path}.ipBlock", _IP_BLOCK)
        if not block.get("cidr"):
            raise KubernetesObjectError(f"{path}.ipBlock.cidr", MISSING, "must be specified")
        cidr = _cidr(block["cidr"], f"{path}.ipBlock.cidr")
        not_nets = []
        for i, raw_except in enumerate(_list(block.get("except"), f"{path}.ipBlock.except")):
            where = f"{path}.ipBlock.except[{i}]"
            excepted = _cidr(raw_except, where)
            # Inside the cidr and strictly smaller (ValidateIPBlock); another family is outside.
            if excepted.network_address not in cidr or excepted.prefixlen <= cidr.prefixlen:
                raise KubernetesObjectError(where, raw_except, "must be a strict subset of `cidr`")
            not_nets.append(str(excepted))
        # An ipBlock peer has no selector, so it matches pods too (Calico issue 6634).
        fields: dict[str, Any] = {"nets": [str(cidr)]}
        if not_nets:
            fields["notNets"] = not_nets
        return fields
    pod_selector = ns_selector = None
    if "podSelector" in peer:
        pod_selector = _label_selector(peer["podSelector"], f"{path}.podSelector")
    if "namespaceSelector" in peer:
        ns_selector = _label_selector(peer["namespaceSelector"], f"{path}.namespaceSelector")
    # An absent podSelector still gives the orchestrator clause: only Kubernetes pods.
    fields = {"selector": k8s_selector_to_calico(pod_selector, pod=True)}
    namespace_selector = k8s_selector_to_calico(ns_selector, pod=False)
    if namespace_selector:
        fields["namespaceSelector"] = namespace_selector
    return fields


# A Calico port: (first, last) for a number or a range, a str for a named port.
CalicoPort = tuple[int, int] | str


def _port_to_calico(raw: object, path: str) -> tuple[str, CalicoPort | None]:
    """(protocol, port) of a NetworkPolicyPort; port None means every port of the protocol."""
    port = _object(raw, path, _PORT)
    # The API server defaults the protocol to TCP (SetDefaults_NetworkPolicyPort); Calico
    # makes the same default explicit because its rules need a protocol for a port match.
    protocol = _string(port.get("protocol", "TCP"), f"{path}.protocol")
    if protocol not in K8S_PROTOCOLS:
        supported = ", ".join(f'"{p}"' for p in K8S_PROTOCOLS)
        raise KubernetesObjectError(
            f"{path}.protocol", protocol, f"supported values: {supported}")
    end_port = port.get("endPort")
    if end_port is not None:
        end_port = _integer(end_port, f"{path}.endPort")
    if "port" not in port:
        if end_port is not None:
            raise KubernetesObjectError(
                f"{path}.endPort", end_port, "may not be specified when `port` is not specified")
        return protocol, None
    number_or_name = port["port"]
    if isinstance(number_or_name, str):
        if end_port is not None:
            raise KubernetesObjectError(
                f"{path}.endPort", end_port, "may not be specified when `port` is non-numeric")
        _check_port_name(number_or_name, f"{path}.port")
        return protocol, number_or_name
    number = _integer(number_or_name, f"{path}.port")
    _check_port_number(number, f"{path}.port")
    if end_port is None:
        return protocol, (number, number)
    if end_port < number:
        raise KubernetesObjectError(
            f"{path}.endPort", end_port, "must be greater than or equal to `port`")
    _check_port_number(end_port, f"{path}.endPort")
    return protocol, (number, end_port)


def _check_port_number(number: int, path: str) -> None:
    if not 1 <= number <= 65535:
        raise KubernetesObjectError(path, number, "must be between 1 and 65535, inclusive")


def _check_port_name(name: str, path: str) -> None:
    """IANA service name, as Kubernetes' IsValidPortName has it."""
    if len(name) > 15:
        raise KubernetesObjectError(path, name, "must be no more than 15 characters")
    if not _PORT_NAME_CHARS.match(name):
        raise KubernetesObjectError(
            path, name, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        raise KubernetesObjectError(path, name, "must contain at least one letter (a-z)")
    if "--" in name:
        raise KubernetesObjectError(path, name, "must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        raise KubernetesObjectError(path, name, "must not begin or end with a hyphen")


def simplify_ports(ports: Sequence[CalicoPort]) -> list[CalicoPort]:
    """conversion.go SimplifyPorts: the fewest ranges covering the numeric ports.

    Named ports come first, in their order, then the merged numeric ranges in
    ascending order. With at most one numeric port nothing is merged and the
    input order is kept (Calico returns its input as it is).
    """
    named = [p for p in ports if isinstance(p, str)]
    numeric = sorted(p for p in ports if not isinstance(p, str))
    if len(ports) <= 1 or len(numeric) <= 1:
        return list(ports)
    merged: list[tuple[int, int]] = []
    for first, last in numeric:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return [*named, *merged]


def _port_json(port: CalicoPort) -> int | str:
    """numorstring.Port's JSON: a number, "first:last", or the name."""
    if isinstance(port, str):
        return port
    first, last = port
    return first if first == last else f"{first}:{last}"


def _rule_to_calico(
    raw_peers: list[Any], raw_ports: list[Any], path: str, *, ingress: bool
) -> list[dict[str, Any]]:
    """conversion.go k8sRuleToCalico: one Allow rule per (protocol, peer).

    Ports are grouped by protocol; a port-less entry opens every port of its
    protocol and absorbs the others. Protocols are sorted ("SCTP" < "TCP" <
    "UDP"); within one, rules follow the peers' order. No ports: one group with
    no protocol. No peers (`from`/`to` absent or empty, the same thing): one
    rule without a peer, matching every source or destination.
    """
    peer_word = "from" if ingress else "to"
    by_protocol: dict[str, list[CalicoPort] | None] = {}
    for i, raw_port in enumerate(raw_ports):
        protocol, port = _port_to_calico(raw_port, f"{path}.ports[{i}]")
        if port is None:
            by_protocol[protocol] = None
        else:
            listed = by_protocol.get(protocol, [])
            if listed is not None:  # every port of the protocol already: nothing to add
                by_protocol[protocol] = [*listed, port]
    if not raw_ports:
        by_protocol = {"": None}
    peers: list[dict[str, Any]] = [
        _peer_to_calico(raw_peer, f"{path}.{peer_word}[{i}]")
        for i, raw_peer in enumerate(raw_peers)
    ] or [{}]

    rules = []
    for protocol in sorted(by_protocol):
        ports = by_protocol[protocol]
        ports_json = [_port_json(p) for p in simplify_ports(ports)] if ports else []
        for peer in peers:
            rule: dict[str, Any] = {"action": "Allow"}
            if protocol:
                rule["protocol"] = protocol
            if ingress:
                source, destination = _entity(peer, []), _entity({}, ports_json)
            else:
                source, destination = {}, _entity(peer, ports_json)
            # Rule.Source/Destination are `omitzero`: an empty EntityRule is not written.
            if source:
                rule["source"] = source
            if destination:
                rule["destination"] = destination
            rules.append(rule)
    return rules


def _entity(peer: Mapping[str, Any], ports: list[int | str]) -> dict[str, Any]:
    """An EntityRule with the peer's fields and the ports, in Go's field order."""
    entity: dict[str, Any] = {}
    for key in ("nets", "selector", "namespaceSelector"):
        if key in peer:
            entity[key] = _copy(peer[key])
    if ports:
        entity["ports"] = list(ports)
    if "notNets" in peer:
        entity["notNets"] = list(peer["notNets"])
    return entity


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


# --- The three conversions ---------------------------------------------------------------


def k8s_network_policy_to_calico(
    doc: Mapping[str, Any], *, default_namespace: str = "default"
) -> dict[str, Any]:
    """A Kubernetes NetworkPolicy as the Calico NetworkPolicy kube-controllers stores.

    Name `knp.default.<name>` in the policy's namespace (`default_namespace`
    when the manifest has none, as kubectl does), tier default, order 1000, the
    converted selector, rules and types; metadata keeps only name and namespace
    (kube-controllers drops the rest "to prevent unnecessary updates") plus the
    tier label Calico's client adds to every policy it writes.
    """
    with _about("NetworkPolicy", doc):
        top, meta = _read_object(doc, "networking.k8s.io/v1", "NetworkPolicy", _POLICY_TOP)
        name = meta["name"]
        _check_dns_subdomain(name, "metadata.name")
        if len(name) > MAX_POLICY_NAME:
            raise KubernetesObjectError(
                "metadata.name", name,
                f"must be no more than {MAX_POLICY_NAME} characters, so that "
                f"'{POLICY_NAME_PREFIX}<name>' is a valid Calico name")
        namespace = _namespace_of(meta, default_namespace)
        spec = _object(top.get("spec", {}), "spec", _POLICY_SPEC)
        # podSelector is required in form but `{}` and absent both select every pod.
        pod_selector = _label_selector(spec.get("podSelector", {}), "spec.podSelector")

        ingress: list[dict[str, Any]] = []
        for i, raw in enumerate(_list(spec.get("ingress"), "spec.ingress")):
            rule = _object(raw, f"spec.ingress[{i}]", _INGRESS_RULE)
            ingress += _rule_to_calico(
                _list(rule.get("from"), f"spec.ingress[{i}].from"),
                _list(rule.get("ports"), f"spec.ingress[{i}].ports"),
                f"spec.ingress[{i}]", ingress=True)
        egress_rules = _list(spec.get("egress"), "spec.egress")
        egress: list[dict[str, Any]] = []
        for i, raw in enumerate(egress_rules):
            rule = _object(raw, f"spec.egress[{i}]", _EGRESS_RULE)
            egress += _rule_to_calico(
                _list(rule.get("to"), f"spec.egress[{i}].to"),
                _list(rule.get("ports"), f"spec.egress[{i}].ports"),
                f"spec.egress[{i}]", ingress=False)

        types = _policy_types(spec.get("policyTypes"), has_egress_rules=bool(egress_rules))

    policy_spec: dict[str, Any] = {"tier": DEFAULT_TIER, "order": POLICY_ORDER}
    if ingress:
        policy_spec["ingress"] = ingress
    # Calico keeps converted egress rules even when the types leave Egress out (it warns);
    # so do we: the types, not the rules, decide what the policy governs.
    if egress:
        policy_spec["egress"] = egress
    policy_spec["selector"] = k8s_selector_to_calico(pod_selector, pod=True)
    policy_spec["types"] = types
    return {
        "kind": "NetworkPolicy",
        "apiVersion": CALICO_API_VERSION,
        "metadata": {
            "name": POLICY_NAME_PREFIX + name,
            "namespace": namespace,
            "labels": {TIER_LABEL: DEFAULT_TIER},
        },
        "spec": policy_spec,
    }


def _policy_types(value: object, *, has_egress_rules: bool) -> list[str]:
    """The API server's defaulting, then Calico's: Ingress before Egress, each once."""
    listed = [_string(t, f"spec.policyTypes[{i}]")
              for i, t in enumerate(_list(value, "spec.policyTypes"))]
    if len(listed) > 2:
        raise KubernetesObjectError(
            "spec.policyTypes", listed, "may not specify more than two policyTypes")
    for i, policy_type in enumerate(listed):
        if policy_type not in POLICY_TYPES:
            raise KubernetesObjectError(
                f"spec.policyTypes[{i}]", policy_type,
                'supported values: "Ingress", "Egress"')
    if not listed:
        # SetDefaults_NetworkPolicy: every policy governs ingress; one with egress rules
        # governs egress too. So a default-deny-egress policy must say policyTypes: [Egress].
        listed = ["Ingress", "Egress"] if has_egress_rules else ["Ingress"]
    return [t for t in POLICY_TYPES if t in listed]


def namespace_to_profile(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Namespace as the Profile `kns.<name>` (conversion.go NamespaceToProfile).

    Its labels, with the control plane's `kubernetes.io/metadata.name`, become
    `pcns.`-prefixed labelsToApply, plus `pcns.projectcalico.org/name: <name>`
    (set last, so it wins); endpoints in the namespace inherit them, which is
    what a namespaceSelector matches. Ingress and egress allow everything: the
    Kubernetes default for a pod that no policy isolates.
    """
    with _about("Namespace", doc):
        _, meta = _read_object(doc, "v1", "Namespace", _NAMESPACE_TOP)
        name = meta["name"]
        _check_dns_label(name, "metadata.name")
        labels = dict(meta.get("labels", {}))
    labels[NAMESPACE_NAME_LABEL] = name
    to_apply = {NAMESPACE_LABEL_PREFIX + key: value for key, value in labels.items()}
    to_apply[NAMESPACE_LABEL_PREFIX + NAME_LABEL] = name
    return {
        "kind": "Profile",
        "apiVersion": CALICO_API_VERSION,
        "metadata": {"name": NAMESPACE_PROFILE_PREFIX + name},
        "spec": {
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": dict(sorted(to_apply.items())),
        },
    }


def service_account_to_profile(
    doc: Mapping[str, Any], *, default_namespace: str = "default"
) -> dict[str, Any]:
    """A ServiceAccount as the Profile `ksa.<namespace>.<name>` (ServiceAccountToProfile).

    labelsToApply are its labels with the `pcsa.` prefix plus
    `pcsa.projectcalico.org/name: <name>`; a serviceAccounts.selector matches
    them. No rules: the namespace profile decides the default.
    """
    with _about("ServiceAccount", doc):
        _, meta = _read_object(doc, "v1", "ServiceAccount", _SERVICE_ACCOUNT_TOP)
        name = meta["name"]
        _check_dns_subdomain(name, "metadata.name")
        namespace = _namespace_of(meta, default_namespace)
        labels = meta.get("labels", {})
    to_apply = {SERVICE_ACCOUNT_LABEL_PREFIX + key: value for key, value in labels.items()}
    to_apply[SERVICE_ACCOUNT_LABEL_PREFIX + NAME_LABEL] = name
    return {
        "kind": "Profile",
        "apiVersion": CALICO_API_VERSION,
        "metadata": {"name": f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{name}"},
        "spec": {"labelsToApply": dict(sorted(to_apply.items()))},
    }


# (apiVersion, kind) of each Kubernetes object converted here.
KUBERNETES_KINDS: Final = frozenset({
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
})


def kubernetes_object_to_calico(
    doc: Mapping[str, Any], *, default_namespace: str = "default"
) -> dict[str, Any] | None:
    """The Calico document for a Kubernetes object converted here; None for any other."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return None
    if (api_version, kind) not in KUBERNETES_KINDS:
        return None
    if kind == "NetworkPolicy":
        return k8s_network_policy_to_calico(doc, default_namespace=default_namespace)
    if kind == "Namespace":
        return namespace_to_profile(doc)
    return service_account_to_profile(doc, default_namespace=default_namespace)
