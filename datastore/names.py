"""Kubernetes name syntax that both the resource models and the CNI plugin check.

Owns: label keys (qualified names: an optional DNS-subdomain prefix and '/',
then at most 63 of letters, digits, '-', '_', '.', alphanumeric at both ends),
label values (the same characters, at most 63, may be empty) and port names
(IANA service names as Kubernetes validates container ports: at most 15
lower-case letters, digits and '-', at least one letter, no '--', no '-' at
either end).

Also owns the name of an endpoint's "policy programmed" status file, which
the agent writes and the CNI plugin waits for (agent/endpoint_status.py,
cni/endpoint_status.py): libcalico-go's v1 workload endpoint key taken from
the v3 name (`ConvertWorkloadEndpointV3KeyToV1Key`: the name's four
dash-separated parts, '--' inside a part standing for '-'; the workload is
`<namespace>/<third part>`), then orchestrator, workload and endpoint, each
escaped as Go's url.PathEscape escapes, joined by spaces
(`WorkloadEndpointKeyToStatusFilename`, libcalico-go/lib/names/
workloadendpointstatus.go). Both sides derive it from (namespace, name), so
they agree by construction.

Each check returns the reason the text is invalid, or None. Pure, and imports
nothing but `re`: the CNI plugin checks its input with it without loading the
resource models (tests/unit/test_cni_light_imports.py).
"""

from __future__ import annotations

import re

# Kubernetes' patterns (k8s.io/apimachinery/pkg/util/validation); policy.k8s checks
# Kubernetes objects with them too, worded as the API server words its refusals.
# DNS-1123 subdomain: what Kubernetes and Calico accept as a resource name.
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# DNS-1123 label: one part of a subdomain (also the characters of a port name).
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# The name part of a qualified name (a label key after its optional "prefix/").
LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not LABEL_NAME_RE.match(name):
        return f"invalid label key '{key}'"
    if prefix and (len(prefix) > 253 or not NAME_RE.match(prefix)):
        return f"invalid label key prefix '{prefix}'"
    return None


def label_value_problem(key: str, value: str) -> str | None:
    if len(value) > 63 or not LABEL_VALUE_RE.match(value):
        return f"invalid label value '{value}' for key '{key}'"
    return None


def port_name_problem(name: str) -> str | None:
    if (len(name) > 15 or not DNS_LABEL_RE.match(name) or "--" in name
            or not any(c.isalpha() for c in name)):
        return ("port name must be at most 15 lower-case letters, digits and '-', with at "
                "least one letter")
    return None


# The directory under Felix's EndpointStatusPathPrefix that holds the status files
# (libcalico-go/lib/epstatusfile); the CNI's endpoint_status_dir defaults to
# /var/run/calico/endpoint-status.
ENDPOINT_STATUS_DIR = "endpoint-status"

# What Go's url.PathEscape leaves alone: RFC 3986 unreserved characters and the
# sub-delimiters a path segment may hold ('/', ';', ',' and '?' are escaped).
_PATH_SEGMENT_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~$&+:=@")


def path_escape(text: str) -> str:
    """Go's url.PathEscape: every other byte of the UTF-8 text as %XX (upper-case hex)."""
    return "".join(chr(b) if b in _PATH_SEGMENT_SAFE else f"%{b:02X}"
                   for b in text.encode())


def dash_separated_parts(name: str, count: int) -> list[str] | None:
    """libcalico-go's ExtractDashSeparatedParms: `name` split at single dashes into
    exactly `count` parts, each with '--' turned back into '-'; None if it does not split so."""
    if len(name) < 2 * count - 1:
        return None
    parts: list[str] = []
    last_dash = -1
    i = 1  # a dash in the first character never separates (Go starts at 1 too)
    while i < len(name):
        if name[i] == "-":
            if i < len(name) - 1 and name[i + 1] == "-":
                i += 2
                continue
            parts.append(name[last_dash + 1:i].replace("--", "-"))
            last_dash = i
        i += 1
    parts.append(name[last_dash + 1:].replace("--", "-"))
    return parts if len(parts) == count else None


def endpoint_status_filename(namespace: str, name: str) -> str | None:
    """The status file name of WorkloadEndpoint `namespace/name`, e.g.
    "k8s default%2Fpod1 eth0" for default/node1-k8s-pod1-eth0; None when the name
    has not Calico's four parts (Felix has no key, so no file, for such an endpoint)."""
    parts = dash_separated_parts(name, 4)
    if parts is None or not namespace:
        return None
    _node, orchestrator, workload, endpoint = parts
    return " ".join((path_escape(orchestrator), path_escape(f"{namespace}/{workload}"),
                     path_escape(endpoint)))
