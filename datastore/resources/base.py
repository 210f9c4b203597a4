"""Resource model foundations: metadata, strict parsing, Calico-style errors.

Every resource is a pydantic model whose field aliases are Calico's JSON
names, so a document round-trips byte-for-byte in meaning. Parsing is strict:
unknown fields are refused (calicoctl's "field in document is not recognized
or is in the wrong location"), types are not coerced ("26" is not an int).
`resourceVersion` is never stored: it is the etcd mod revision, filled on read.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from .. import selector as selectors
from ..errors import FieldError, ParseError, ValidationError
from ..keys import resource_key
from ..names import NAME_RE as NAME_RE  # re-exported: the kinds' modules use base.NAME_RE
from ..names import label_key_problem, label_value_problem

API_VERSION = "projectcalico.org/v3"
# Where a namespaced resource without a namespace lands (calicoctl's default).
DEFAULT_NAMESPACE = "default"
# validator.go's totalAnnotationSizeLimitB: keys plus values, in bytes.
ANNOTATIONS_MAX_BYTES = 256 * 1024


class StrictModel(BaseModel):
    """No unknown fields, no type coercion, Calico's JSON names.

    `dump()` is the JSON Go's encoding/json writes for the Calico struct the model
    mirrors, which calicoctl prints and libcalico-go stores. The two ClassVars below are
    the whole per-field rule, read from the Go struct tags: every other field is a value
    with `json:",omitempty"` (or `omitzero`), left out when unset or zero (false, 0, "",
    an empty list or map, a struct with nothing set)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    # Fields printed when set even if zero: Go pointers (`*bool` false, `*float64` 0, a
    # pointer to an empty struct), fields without omitempty, and non-pointer structs.
    go_keep_zero: ClassVar[frozenset[str]] = frozenset()
    # Fields Go prints even when unset (no omitempty, or a struct omitempty cannot drop),
    # with what it prints then: `status: {}` for a struct omitempty cannot drop.
    go_unset: ClassVar[dict[str, Any]] = {}

    def dump(self) -> dict[str, Any]:
        return go_json_document(self, self.model_dump(by_alias=True, exclude_none=True,
                                                      mode="json"))


def _is_go_zero(value: object) -> bool:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, (str, list, dict)):
        return not value
    return value is None


def _go_json_value(value: object, doc: Any) -> Any:
    if isinstance(value, StrictModel) and isinstance(doc, dict):
        return go_json_document(value, doc)
    if isinstance(value, (list, tuple)) and isinstance(doc, list):
        return [_go_json_value(v, d) for v, d in zip(value, doc, strict=True)]
    return doc


def go_json_document(model: StrictModel, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` (the model's pydantic dump) with Go's omitempty applied, nested models too.
    Keys keep the dump's order; an unset field Go prints goes where the model declares it."""
    keys = list(doc)
    fields = type(model).model_fields
    unset = [key for key in model.go_unset if key not in doc]
    if unset:  # most models have none: the declared order is needed only then
        declared = [field.alias or name for name, field in fields.items()]
        for key in unset:
            before = declared[:declared.index(key)]
            at = max((keys.index(k) + 1 for k in before if k in keys), default=0)
            keys.insert(at, key)
    out: dict[str, Any] = {}
    for name, field in fields.items():
        key = field.alias or name
        if key in doc:
            doc[key] = _go_json_value(getattr(model, name), doc[key])
    for key in keys:
        if key not in doc:
            out[key] = copy.deepcopy(model.go_unset[key])
        elif key in model.go_unset or key in model.go_keep_zero or not _is_go_zero(doc[key]):
            out[key] = doc[key]
    return out



class ItemError(ValueError):
    """A field check's refusal of one part of the field (a label, a list item), so the
    error names that part: `suffix` is appended to the field's Go path (Calico's
    " (label)", or "[2]") and `value` replaces the whole field's value."""

    def __init__(self, message: str, value: object, suffix: str) -> None:
        super().__init__(message)
        self.value = value
        self.suffix = suffix


class ObjectMeta(StrictModel):
    # metav1.ObjectMeta: every field omitempty; creationTimestamp is a metav1.Time struct
    # tagged omitzero as well (apimachinery v0.37), so an unset one is not printed
    # either (calicoctl/calicoctl/commands/common/printer_test.go expects no key).
    name: str = ""
    namespace: str | None = None
    # The order of Kubernetes' ObjectMeta, so printed JSON has calicoctl's key order.
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        # validator.go validateObjectMetaLabels: its paths and values.
        for k, v in (labels or {}).items():
            problem = label_key_problem(k)
            if problem:
                raise ItemError(problem, k, " (label)")
            problem = label_value_problem(k, v)
            if problem:
                raise ItemError(problem, v, " (value)")
        return labels

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, annotations: dict[str, str] | None) -> dict[str, str] | None:
        """validator.go validateObjectMetaAnnotations: keys are qualified names once
        lower-cased (so 'ProjectCalico.org/Label' passes), and all of it fits 256 KiB."""
        return check_annotations(annotations)


def check_annotations(annotations: dict[str, str] | None) -> dict[str, str] | None:
    total = 0
    for k, v in (annotations or {}).items():
        if label_key_problem(k.lower()):
            raise ItemError(f"invalid annotation key '{k}': must be a qualified name "
                            "such as 'example.com/my-key'", k, " (key)")
        total += len(k.encode()) + len(v.encode())
    if total > ANNOTATIONS_MAX_BYTES:
        raise ItemError(f"total size of annotations is too large by "
                        f"{total - ANNOTATIONS_MAX_BYTES} bytes", f"{total} bytes", "")
    return annotations


class Resource(StrictModel):
    """Base of every v3 resource. Subclasses set the ClassVars and `spec`."""

    kind_name: ClassVar[str] = ""
    plural: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    namespaced: ClassVar[bool] = False

    # TypeMeta is never empty; metadata and spec are non-pointer structs.
    go_keep_zero: ClassVar[frozenset[str]] = frozenset({"kind", "apiVersion", "metadata", "spec"})

    kind: str = ""
    apiVersion: str = API_VERSION
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="after")
    def _default_namespace(self) -> Self:
        if self.namespaced and not self.metadata.namespace:
            self.metadata.namespace = DEFAULT_NAMESPACE
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def resource_version(self) -> int | None:
        rv = self.metadata.resourceVersion
        return int(rv) if rv else None

    def key(self) -> str:
        return resource_key(self.plural, self.name, self.namespace if self.namespaced else None)

    def to_stored(self) -> bytes:
        """The JSON document kept in etcd: resourceVersion blanked (it is the mod revision)."""
        doc = self.dump()
        doc["metadata"].pop("resourceVersion", None)
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_stored(cls, value: bytes, mod_revision: int) -> Self:
        doc = json.loads(value)
        doc.setdefault("metadata", {})["resourceVersion"] = str(mod_revision)
        return cls.model_validate(doc)

    def validate_semantics(self) -> list[FieldError]:
        """Cross-field rules that pydantic field validators cannot express. Pure."""
        return []


# --- reusable field validators -------------------------------------------------------


def check_subdomain(value: str) -> str:
    """A field that names another resource (a node, a pod, a service): a DNS-1123 subdomain."""
    if len(value) > 253 or not NAME_RE.match(value):
        raise ValueError("must consist of lower case alphanumeric characters, '-' or '.', "
                         "and must start and end with an alphanumeric character")
    return value


def check_name(kind: str, name: str, namespaced: bool, namespace: str | None) -> None:
    if not name:
        raise ValidationError("resource name may not be empty")
    if len(name) > 253 or not NAME_RE.match(name):
        raise ValidationError(
            fields=[FieldError(f"{kind}.Metadata.Name", name,
                               "name must consist of lower case alphanumeric characters, '-' "
                               "or '.', and must start and end with an alphanumeric character")]
        )
    if namespace and not namespaced:
        raise ValidationError(
            "namespace should not be specified for a non-namespaced resource. "
            f"{kind} is not a namespaced resource"
        )


ASN_MAX = 4294967295


def parse_asn(value: object) -> int:
    """An AS number as calicoctl accepts it: 0-4294967295, or dotted 'A.B' (AS.dot)."""
    if isinstance(value, bool):
        raise ValueError("invalid AS number: expected an integer or 'A.B'")
    if isinstance(value, int):
        if 0 <= value <= ASN_MAX:
            return value
        raise ValueError("AS number out of range: must be 0-4294967295")
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+", text):
            return parse_asn(int(text))
        m = re.fullmatch(r"(\d+)\.(\d+)", text)
        if m:
            hi, lo = int(m[1]), int(m[2])
            if hi <= 65535 and lo <= 65535:
                return hi * 65536 + lo
            raise ValueError("AS.dot number out of range: each part must be 0-65535")
        raise ValueError("invalid AS number: expected an integer or 'A.B'")
    if isinstance(value, float):
        raise ValueError("invalid AS number: write dotted AS numbers as a quoted string, e.g. '1.10'")
    raise ValueError("invalid AS number: expected an integer or 'A.B'")


def parse_ip(value: str, version: int | None = None) -> str:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be a valid IP address") from None
    if version and ip.version != version:
        raise ValueError(f"must be a valid IPv{version} address")
    return str(ip)


def parse_cidr_with_host(value: str, version: int | None = None) -> str:
    """An address with its prefix, e.g. 10.0.0.5/24 (host bits allowed, as Node.ipv4Address)."""
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError("must be a valid IP address with prefix length, e.g. 10.0.0.5/24") from None
    if "/" not in value:
        raise ValueError("must include the prefix length, e.g. 10.0.0.5/24")
    if version and iface.version != version:
        raise ValueError(f"must be an IPv{version} address with prefix")
    return str(iface)


def check_selector(value: str | None) -> str | None:
    """A pydantic field check for Calico selector strings (None passes)."""
    if value is None:
        return None
    try:
        selectors.validate(value)
    except selectors.SelectorError as exc:
        raise ValueError(str(exc)) from None
    return value


def parse_subnet(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError("must be a valid subnet") from None
        raise ValueError("is not strictly masked") from None


def go_path(kind: str, loc: tuple[int | str, ...]) -> str:
    """Pydantic's location ('spec','blockSize') as Calico's Go path 'IPPool.Spec.BlockSize'."""
    parts = [kind]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
            continue
        parts.append(GO_NAMES.get(item, item[:1].upper() + item[1:]))
    return ".".join(parts)


# Go struct names for JSON fields whose capitalisation is not just the first letter;
# kinds defined elsewhere add theirs at import.
GO_NAMES = {
    "cidr": "CIDR", "bgp": "BGP", "peerIP": "PeerIP", "asNumber": "ASNumber",
    "localASNumber": "LocalASNumber", "ipipMode": "IPIPMode", "vxlanMode": "VXLANMode",
    "ipv4Address": "IPv4Address", "ipv6Address": "IPv6Address",
    "ipv4IPIPTunnelAddr": "IPv4IPIPTunnelAddr", "ipv4VXLANTunnelAddr": "IPv4VXLANTunnelAddr",
    "vxlanTunnelMACAddr": "VXLANTunnelMACAddr", "routeReflectorClusterID": "RouteReflectorClusterID",
    "disableBGPExport": "DisableBGPExport", "ttlSecurity": "TTLSecurity",
    "serviceClusterIPs": "ServiceClusterIPs", "serviceExternalIPs": "ServiceExternalIPs",
    "serviceLoadBalancerIPs": "ServiceLoadBalancerIPs",
}


def errors_from_pydantic(kind: str, exc: PydanticValidationError, doc: object) -> ValidationError:
    fields: list[FieldError] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            return ParseError(
                "field in document is not recognized or is in the wrong location: "
                + ".".join(str(p) for p in loc)
            )
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "missing":
            msg = "required field is missing"
        value = err.get("input")
        if isinstance(value, (dict, list)) or err["type"] == "missing":
            value = "" if err["type"] == "missing" else value
        path = go_path(kind, loc)
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ItemError):
            path, value = path + cause.suffix, cause.value
        fields.append(FieldError(path, value, msg))
    return ValidationError(fields=fields)
