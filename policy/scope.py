"""Selector scoping: the selectors Felix actually evaluates for a policy and its rules.

Calico does not evaluate a policy's selectors as written. Its update processors
(projectcalico/calico `libcalico-go/lib/backend/syncersv1/updateprocessors/`
`networkpolicyprocessor.go`, `globalnetworkpolicyprocessor.go`, `rules.go`
`getEndpointSelector`, `selectors.go`) rewrite them before Felix sees them:

* a NetworkPolicy's selector is AND'ed with `projectcalico.org/namespace == '<ns>'`
  (alone when the selector is empty);
* a `serviceAccountSelector` gets its keys prefixed `pcsa.` and is AND'ed on;
* a GlobalNetworkPolicy's `namespaceSelector` gets its keys prefixed `pcns.` and is
  AND'ed on, and then every `all()` left in the whole selector becomes
  `has(projectcalico.org/namespace)` (Calico does this with a string replace over the
  combined selector; here it is the same replacement done on the tree); a
  `serviceAccountSelector` there likewise turns every `all()` into
  `has(projectcalico.org/serviceaccount)`;
* a rule's source/destination: a `namespaceSelector` is prefixed `pcns.` with its
  `all()` meaning "any namespaced endpoint" and `global()` "no namespaced endpoint";
  without one, a namespaced policy's rules are limited to its own namespace; that
  namespace part is AND'ed in as soon as any of selector, serviceAccounts,
  notSelector or namespaceSelector is used, and `notSelector` itself stays unscoped.

Every function returns a datastore.selector.Selector: `str()` is its canonical form
(the string Felix hashes into the ipset name) and `.evaluate(labels)` its matcher.
Invariants: scoping never parses a second selector language; it builds trees of
datastore.selector's nodes, shaped as Felix's parser shapes the strings Calico
concatenates: `(X) && Y` is an And of X's tree and Y's, and a part Calico printed with
String() and Felix parses again has its runs of `!` collapsed (`_as_reparsed`), so the
canonical strings, and so the ipset names, are Felix's own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from datastore.selector import All, And, Global, Has, In, Not, Or, Selector, parse
from datastore.selector import Eq as _Eq

NAMESPACE_LABEL = "projectcalico.org/namespace"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."

__all__ = [
    "NAMESPACE_LABEL",
    "NAMESPACE_LABEL_PREFIX",
    "ORCHESTRATOR_LABEL",
    "SERVICE_ACCOUNT_LABEL",
    "SERVICE_ACCOUNT_LABEL_PREFIX",
    "entity_selector",
    "in_namespace",
    "policy_selector",
    "prefixed",
]


def in_namespace(namespace: str) -> Selector:
    """`projectcalico.org/namespace == '<namespace>'`."""
    return _Eq(NAMESPACE_LABEL, namespace)


def _and(*terms: Selector) -> Selector:
    return terms[0] if len(terms) == 1 else And(terms)


def _map_leaves(selector: Selector, leaf: Callable[[Selector], Selector]) -> Selector:
    """`selector` with `leaf` applied to every node that is not &&, || or !."""
    if isinstance(selector, And | Or):
        return type(selector)(tuple(_map_leaves(t, leaf) for t in selector.terms))
    if isinstance(selector, Not):
        return Not(_map_leaves(selector.operand, leaf))
    return leaf(selector)


def _as_reparsed(selector: Selector) -> Selector:
    """`selector` as Felix has it after Calico printed it and Felix parsed the text again:
    String() prints `!(!a)` as `!!a`, and the parser reads a run of `!` as one or none."""
    if isinstance(selector, And | Or):
        return type(selector)(tuple(_as_reparsed(t) for t in selector.terms))
    negated = False
    while isinstance(selector, Not):
        negated, selector = not negated, selector.operand
    selector = _as_reparsed(selector) if isinstance(selector, And | Or) else selector
    return Not(selector) if negated else selector


def prefixed(selector: Selector, prefix: str) -> Selector:
    """Every label key in `selector` with `prefix` in front (Calico's PrefixVisitor), as
    Felix reads the String() Calico makes of it.

    all() and global() are left alone, as Calico's visitor leaves them.
    """

    def rename(node: Selector) -> Selector:
        key = getattr(node, "key", None)
        if key is None:
            return node
        # A prefixed key can outgrow the 63-character name limit the node constructors
        # check (Calico does not check it here), so the copy bypasses __post_init__.
        renamed = copy.copy(node)
        object.__setattr__(renamed, "key", prefix + key)
        return renamed

    return _as_reparsed(_map_leaves(selector, rename))


def _replace(selector: Selector, node: type[Selector], replacement: Selector) -> Selector:
    """`selector` with every `node` (all() or global()) replaced: Calico's strings.Replace."""
    return _map_leaves(selector, lambda n: replacement if isinstance(n, node) else n)


def policy_selector(
    selector: str,
    namespace: str | None,
    service_account_selector: str = "",
    namespace_selector: str = "",
) -> Selector:
    """The endpoints a policy applies to, as Felix sees them.

    `namespace` is the NetworkPolicy's namespace (None for a GlobalNetworkPolicy);
    `namespace_selector` exists only on GlobalNetworkPolicy.
    """
    terms: list[Selector] = [parse(selector)] if selector else []
    if namespace:
        # networkpolicyprocessor.go: "(sel) && ns", then prefixAndAppendSelector:
        # "(that) && sa", an And inside an And.
        scoped = _and(*terms, in_namespace(namespace))
        if service_account_selector:
            sa = prefixed(parse(service_account_selector), SERVICE_ACCOUNT_LABEL_PREFIX)
            scoped = And((scoped, sa))
        return scoped
    if namespace_selector:
        terms.append(prefixed(parse(namespace_selector), NAMESPACE_LABEL_PREFIX))
        combined = _replace(_and(*terms), All, Has(NAMESPACE_LABEL))
        terms = [combined]
    if service_account_selector:
        terms.append(prefixed(parse(service_account_selector), SERVICE_ACCOUNT_LABEL_PREFIX))
        terms = [_replace(_and(*terms), All, Has(SERVICE_ACCOUNT_LABEL))]
    return _and(*terms) if terms else All()


def _service_accounts(names: Sequence[str], selector: str) -> Selector | None:
    """Calico's parseServiceAccounts: `pcsa.`-prefixed selector AND names as an `in` set."""
    parts: list[Selector] = []
    if selector:
        parts.append(prefixed(parse(selector), SERVICE_ACCOUNT_LABEL_PREFIX))
    if names:
        parts.append(In(SERVICE_ACCOUNT_LABEL, frozenset(names)))
    return _and(*parts) if parts else None


def entity_selector(
    policy_namespace: str | None,
    selector: str = "",
    not_selector: str = "",
    namespace_selector: str = "",
    service_account_names: Sequence[str] = (),
    service_account_selector: str = "",
) -> Selector | None:
    """The positive selector of a rule's source or destination, or None when it has none.

    The rule's notSelector is not part of it (it stays unscoped, as written); it is
    passed only because using it limits the rule to the namespace part.
    """
    ns_part: Selector | None = None
    if namespace_selector:
        ns_part = prefixed(parse(namespace_selector), NAMESPACE_LABEL_PREFIX)
        ns_part = _replace(ns_part, All, Has(NAMESPACE_LABEL))
        # The text replacement makes "!global()" "!!has(...)", which Felix reads as has().
        ns_part = _as_reparsed(_replace(ns_part, Global, Not(Has(NAMESPACE_LABEL))))
    elif policy_namespace:
        ns_part = in_namespace(policy_namespace)
    parts: list[Selector] = []
    sa_part = _service_accounts(service_account_names, service_account_selector)
    if sa_part is not None:
        parts.append(sa_part)
    if selector:
        parts.append(parse(selector))
    positive = _and(*parts) if parts else None
    if ns_part is not None and (positive is not None or not_selector or namespace_selector):
        return ns_part if positive is None else And((ns_part, positive))
    return positive
