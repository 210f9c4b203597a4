"""Kubernetes name syntax that both the resource models and the CNI plugin check.

Owns: label keys (qualified names: an optional DNS-subdomain prefix and '/',
then at most 63 of letters, digits, '-', '_', '.', alphanumeric at both ends),
label values (the same characters, at most 63, may be empty) and port names
(IANA service names as Kubernetes validates container ports: at most 15
lower-case letters, digits and '-', at least one letter, no '--', no '-' at
either end).

Each check returns the reason the text is invalid, or None. Pure, and imports
nothing but `re`: the CNI plugin checks its input with it without loading the
resource models (tests/unit/test_cni_light_imports.py).
"""

from __future__ import annotations

import re

# DNS-1123 subdomain: what Kubernetes and Calico accept as a resource name.
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_PORT_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        return f"invalid label key '{key}'"
    if prefix and (len(prefix) > 253 or not NAME_RE.match(prefix)):
        return f"invalid label key prefix '{prefix}'"
    return None


def label_value_problem(key: str, value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
        return f"invalid label value '{value}' for key '{key}'"
    return None


def port_name_problem(name: str) -> str | None:
    if (len(name) > 15 or not _PORT_NAME_RE.match(name) or "--" in name
            or not any(c.isalpha() for c in name)):
        return ("port name must be at most 15 lower-case letters, digits and '-', with at "
                "least one letter")
    return None
