"""Network policy semantics, pure (no I/O): Calico's model, evaluated once, here.

`policy.model` holds the compiled, hashable forms evaluation needs (endpoints,
network sets, tiers, policies, profiles, rules) and the one `compile_*` step
from datastore documents to them; `policy.scope` rewrites a policy's and its
rules' selectors the way Calico's update processors do; `policy.evaluate`
computes selector members, which policies apply, the tier walk and per-rule
matching, and `evaluate(state, flow)` returns a Verdict with its path. The
agent's calculation and `ctl explain` both call these, so they cannot disagree.
"""
