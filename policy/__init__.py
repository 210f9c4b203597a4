"""Network policy semantics, pure (no I/O): Calico's model, held once, here.

`policy.k8s` converts Kubernetes NetworkPolicy, Namespace and ServiceAccount
objects into the Calico documents calico-kube-controllers stores in etcd mode.
`policy.model` holds the compiled, hashable forms evaluation needs (endpoints,
network sets, tiers, policies, profiles, rules) and the one `compile_*` step
from datastore documents to them; `policy.scope` rewrites a policy's and its
rules' selectors the way Calico's update processors do; `policy.evaluate`
computes selector members, which policies apply, the tier walk and per-rule
matching, and `evaluate(state, flow)` returns a Verdict with its path. The
agent's calculation and `ctl explain` both call these, so they cannot disagree.
"""
