"""agent.dataplane: the kernel writers (the only part of the agent that needs root).

One writer per kernel object kind. Each keeps its desired state and the last
kernel state it knows, writes only the difference, marks what it owns and
never touches anything else. A failed apply is returned (never raised), leaves
the writer dirty, and the next apply retries; `resync()` forces a re-read
(the agent calls it periodically) and `on_interface_change(name)` re-reads what
depends on one interface (the link monitor's events). Kinds the kernel announces
nothing about (iptables, ipsets) also have `check_drift()`: a cheap comparison
that, on a difference, makes the next apply write only that difference; the
RouteTable has `on_route_removed(dst, metric)` for the kernel's route deletions.

    routes.RouteTable        main-table IPv4 routes: proto 80 anywhere, any route on
                             cali*; raw netlink writes (batched) and reads (netlink.py)
    neighbors.NeighborTable  permanent neighbours and `self` FDB entries on vxlan.calico
    tunnels.VXLANManager     the vxlan.calico device (recreated when incompatible)
    tunnels.IPIPManager      tunl0 (the ipip fallback device): address, MTU, up/down
    sysctls.SysctlManager    ip_forward and the per-workload-interface sysctls
    ipsets.IPSets            cali40*/cali60* ipsets (ipset restore)
    iptables.IptablesTable   one per table: tortie's cali-* chains and hooks (iptables-restore)
    monitor.LinkMonitor      netlink link/address events -> callback(ifname, event), and
                             route deletions -> on_route_removed(dst, metric)
    nft_generation           the nf_tables ruleset generation (the iptables drift check)
    facade.KernelDataplane   all of the above, fed a DesiredDataplane; the Dataplane
                             Protocol the agent's loop drives

The apply order is owned by facade.KernelDataplane.apply alone (see there):
ipsets before the rules that use them, devices before the routes and
neighbours on them, routes removed before their device, rules removed before
their ipsets. A device that is created, recreated or deleted is announced to
the other writers, because the kernel dropped the routes and neighbours that
were on it.

Every writer takes `netns=None|"name"`: tests and the lab run them inside a
network namespace (`ip -n NAME`, or a worker thread that entered it).
"""
