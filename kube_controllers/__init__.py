"""tortie-kube-controllers: Kubernetes objects into etcd, as calico-kube-controllers does.

A room at the edge (nothing imports it); it depends on datastore, policy, ipam
and service. `reconcile` is pure (what to write), `kube` lists and watches the
API server, `loop` owns the caches and every write (`etcd_side`), `main` starts
it all. docs/kubernetes.md describes each controller.
"""
