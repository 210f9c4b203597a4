"""The sysctls of a workload (cali) interface: the one list, for the agent and the CNI plugin.

Felix's configureProcSysForInterface (felix/dataplane/linux/endpoint_mgr.go):
proxy_arp = 1 (the host answers the pod's ARP for 169.254.1.1), forwarding = 1,
route_localnet = 1, and neigh proxy_delay = 0 (answer at once, not after up to
0.8 s). The CNI plugin (cni.wiring) sets them when it creates the veth, so the
pod works before the agent sees it; the agent's SysctlManager keeps them set.

Standard library only, and nothing at all imported: the CNI plugin imports this
on every invocation, where start-up time counts (docs/cni.md, Performance).
"""


def interface_sysctls(ifname: str) -> dict[str, str]:
    """The per-interface settings, as paths under /proc/sys -> value."""
    return {
        f"net/ipv4/conf/{ifname}/proxy_arp": "1",
        f"net/ipv4/conf/{ifname}/forwarding": "1",
        f"net/ipv4/conf/{ifname}/route_localnet": "1",
        f"net/ipv4/neigh/{ifname}/proxy_delay": "0",
    }
