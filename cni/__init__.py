"""CNI: the `tortie` main plugin, the `tortie-ipam` IPAM plugin and install-cni (docs/cni.md).

Modules, pure ones first:
  errors    the exception tree, each class carrying its CNI error code
  spec      versions, the CNI_* environment, CNI_ARGS, result documents
  config    the network configuration (stdin) and the node name / MTU it leads to
  naming    who an invocation is for: veth, endpoint and handle names
  wiring    the veth, addresses, routes and sysctls (runs `ip`)
  backend   IPAM and WorkloadEndpoint operations against etcd (lazy heavy imports)
  server    the node's CNI server and the plugin's client for it
  lazy_backend  the plugin's backend: the server's, or in-process; opened on first use
  ipam      tortie's IPAM in-process, or a delegated IPAM plugin
  skel      the process edge: dispatch, result or error JSON, logging
  plugin    tortie-cni: ADD / DEL / CHECK with rollback
  ipam_plugin  tortie-ipam
  install   tortie-install-cni

The plugin processes import only the standard library, these modules and
agent.dataplane.workload_sysctls (the workload interface's sysctls, shared with
the agent; it imports nothing) until they need etcd themselves (see backend and
server).
"""
