"""`tortie-cni`: the CNI plugin (ADD, DEL, CHECK, VERSION) that wires pods Calico's way.

ADD, in order, each step undone if a later one fails (reverse order):
  1. validate everything that needs no side effect: the configuration, CNI_ARGS,
     the node name, the workload's names, that CNI_NETNS exists; in Kubernetes
     mode, read the pod and its namespace from the API server (cni/k8s.py);
  2. IPAM: an address for handle `<network>.<CNI_CONTAINERID>` (undo: release it);
  3. the veth, addresses, routes and sysctls (cni/wiring.py) (undo: delete the veth);
  4. the WorkloadEndpoint (create or replace); the agent takes over from here;
  5. with policy_setup_timeout_seconds > 0: wait for the agent to have programmed
     the endpoint (cni/endpoint_status.py; on timeout, log and go on, as Calico);
  6. print the result: host and container interfaces, the /32, a default route.
A failed ADD therefore leaves no address allocated and no interface behind;
the error says what failed, and the rollback's own failures (if any) are in
its details (a later DEL, which runtimes always send, finishes the job).
A retried ADD gets the same address (the handle already holds it), a fresh
veth and the same endpoint: the same result.

DEL removes the interface from the container side, the endpoint (only if it
is still this container's) and the handle's addresses; each step tolerates
what is already gone, and all are attempted even if one fails (the first
failure is reported, so the runtime retries).

CHECK (cniVersion >= 0.4.0) compares the interfaces, addresses, routes, the
IPAM handle and the endpoint with prevResult, reporting every difference.

The heavy imports (etcd, IPAM, resource models) happen only when the
datastore is first needed: see cni/backend.py.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from . import config, endpoint_status, wiring
from .errors import (
    CheckFailed,
    CniError,
    ContainerUnknown,
    IncompatibleVersion,
    InvalidConfig,
    NoAddresses,
    TryAgainLater,
)
from .ipam import Ipam, find_plugin, make_ipam, requested_ips
from .lazy_backend import LazyBackend, SharedBackend
from .naming import GATEWAY, HOST_MAC, Workload, endpoint_document, identify
from .skel import configure_logging, plugin_main
from .spec import (
    CniEnv,
    Interface,
    IPConfig,
    Result,
    RouteConfig,
    parse_cni_args,
    supports_check,
)

_log = logging.getLogger(__name__)


class Invocation:
    """What every command needs: the parsed configuration, the workload, the backend."""

    def __init__(self, env: CniEnv, data: bytes, environ: Mapping[str, str],
                 shared: SharedBackend | None = None) -> None:
        self.env = env
        self.environ = environ
        self.conf = config.parse(data)
        configure_logging(config.LOG_LEVELS[self.conf.log_level], self.conf.log_file_path)
        self.cni_args = parse_cni_args(env.args)
        if self.conf.ipam is not None and self.conf.ipam.type != config.TORTIE_IPAM:
            find_plugin(self.conf.ipam.type, env.path)  # an unknown IPAM type fails first
        self.backend = LazyBackend(self.conf.etcd, environ, self.conf.server_socket, shared)
        self.requested: tuple[str, ...] | None = None  # None: CNI_ARGS IP and args.cni.ips

    def read_kubernetes(self, w: Workload) -> None:
        """Kubernetes mode (cni/k8s.py): the pod, read from the API server, replaces what
        args.cni says about it, as Calico takes it all from Kubernetes. Only for a pod the
        runtime names with its namespace (the kubelet does; podman passes only a name)."""
        kube = self.conf.kubernetes
        if not kube.enabled or w.pod is None or "K8S_POD_NAMESPACE" not in self.cni_args:
            return
        from . import k8s

        found = k8s.read_pod(kube, w.namespace, w.pod)
        if self.conf.pod != config.NO_POD_ARGS:
            _log.info("Kubernetes mode: args.cni's labels, ports and service account are "
                      "ignored for %s; the pod's are used", w.describe())
        ipam = self.conf.ipam
        if ipam is not None and ipam.type == config.TORTIE_IPAM and found.ipv4_pools is not None:
            ipam = ipam._replace(ipv4_pools=found.ipv4_pools)
        self.conf = self.conf._replace(pod=found.pod, ipam=ipam)
        if found.ip_addrs:
            self.requested = found.ip_addrs

    def workload(self) -> Workload:
        node = config.node_name(self.conf)
        return identify(self.conf.name, node, self.env.container_id, self.env.ifname,
                        self.cni_args)

    def ipam(self, workload: Workload) -> Ipam:
        requested = ((requested_ips(self.cni_args, self.conf) if self.requested is None
                      else self.requested) if self.env.command == "ADD" else ())
        return make_ipam(self.conf, self.env, self.environ, workload, self.backend, requested)


def _undo(steps: list[tuple[str, Callable[[], object]]]) -> list[str]:
    """Run rollback steps newest first; return what could not be undone."""
    failed = []
    for what, step in reversed(steps):
        try:
            step()
            _log.info("rolled back: %s", what)
        except Exception as exc:  # noqa: BLE001 - keep undoing; the caller reports
            _log.error("rollback of %s failed: %s", what, exc)
            failed.append(f"{what}: {exc}")
    return failed


_T = TypeVar("_T")


class _Background(Generic[_T]):
    """`make()` on a thread of its own, in the calling context (so its log records go
    where the call's do: cni/skel.py); `outcome()` waits for its result or its error."""

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._result: _T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._run,), name="tortie-cni-pair", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._make()
        except BaseException as exc:  # noqa: BLE001 - handed to outcome()'s caller
            self._error = exc

    def outcome(self) -> tuple[_T | None, BaseException | None]:
        self._thread.join()
        return self._result, self._error


STAGES_LOG = "ADD stages (ms):"  # bench/pods.py --stages reads these lines


def _stage_times(marks: list[tuple[str, float]]) -> str:
    """`name 1.2 ...` for each mark's time since the one before it, then the total. Pure."""
    parts = [f"{name} {(t - marks[i][1]) * 1000:.1f}"
             for i, (name, t) in enumerate(marks[1:])]
    return " ".join([*parts, f"total {(marks[-1][1] - marks[0][1]) * 1000:.1f}"])


def cmd_add(env: CniEnv, data: bytes, environ: Mapping[str, str],
            shared: SharedBackend | None = None) -> dict[str, Any]:
    # Where an ADD's time goes, logged at debug (log_level "debug" in the network
    # configuration); at other levels it costs a few clock reads.
    marks = [("start", time.perf_counter())]
    inv = Invocation(env, data, environ, shared)
    w = inv.workload()
    if not wiring.netns_exists(env.netns_path):
        raise ContainerUnknown(f"the container's network namespace {env.netns} does not exist")
    inv.read_kubernetes(w)
    conf = inv.conf
    mtu, mtu_source = config.pod_mtu(conf)
    ipam = inv.ipam(w)
    undo: list[tuple[str, Callable[[], object]]] = []
    plan = wiring.VethPlan(w.veth_name, env.ifname, env.netns_path, mtu, w.container_mac, ())
    host_ifname = plan.host_ifname
    remove_veth = (f"host interface {host_ifname}", lambda: wiring.remove_host_veth(host_ifname))
    marks.append(("setup", time.perf_counter()))
    try:
        # The veth pair is made while IPAM answers (wiring.Pair): an address is mostly a
        # wait for etcd, the pair mostly the kernel's work. Only a new name is created
        # meanwhile: a same-named host end (a retried ADD, the pod's previous sandbox) is
        # replaced only once the address is ours, as when the steps ran one after the other.
        fresh = plan
        making = _Background(lambda: wiring.create_pair(fresh, replace=False))
        try:
            ipam_result = ipam.add()
        except BaseException:
            pair, error = making.outcome()
            if pair is not None:
                pair.close()
            if pair is not None or error is not None:
                undo.append(remove_veth)
            raise
        marks.append(("ipam", time.perf_counter()))
        undo.append((f"the address(es) of handle {w.handle_id}", ipam.delete))
        pair, error = making.outcome()
        if pair is not None or error is not None:
            # What this ADD created (None: the name was taken, and nothing was done).
            undo.append(remove_veth)
        if error is not None:
            raise error
        try:
            v4 = tuple(ip.ip for ip in ipam_result.ips if ip.version == "4")
            if not v4:
                raise NoAddresses(f"IPAM ({conf.ipam.type if conf.ipam else '?'}) returned no "
                                  f"IPv4 address for {w.describe()}")
            plan = plan._replace(addresses=v4)
            if pair is None:
                undo.append(remove_veth)
                pair = wiring.create_pair(plan)
            assert pair is not None  # replacing, it never gives up
            pair.address(v4)
        finally:
            if pair is not None:
                pair.close()
        marks.append(("wire", time.perf_counter()))
        inv.backend().put_endpoint(
            endpoint_document(w, [f"{ip}/32" for ip in v4], conf.pod))
        marks.append(("endpoint", time.perf_counter()))
    except BaseException as exc:
        failed = _undo(undo)
        if failed and isinstance(exc, CniError):
            exc.details = "; ".join(filter(None, [exc.details, "rollback incomplete (a DEL "
                                                   "will finish it): " + "; ".join(failed)]))
        raise
    finally:
        inv.backend.close()
    _log.info("%s: %s on %s (mtu %d from %s), endpoint %s/%s", w.describe(),
              ", ".join(v4), plan.host_ifname, mtu, mtu_source, w.namespace, w.endpoint_name)
    if conf.policy_setup_timeout:
        # After the backend is closed: the wait holds no datastore connection.
        endpoint_status.wait_until_programmed(conf.endpoint_status_dir, w.namespace,
                                              w.endpoint_name, w.container_mac,
                                              conf.policy_setup_timeout)
        marks.append(("policy_wait", time.perf_counter()))
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("%s %s", STAGES_LOG, _stage_times(marks))
    result = Result(
        interfaces=(Interface(plan.host_ifname, HOST_MAC),
                    Interface(env.ifname, w.container_mac, env.netns)),
        ips=tuple(IPConfig(f"{ip}/32", None, 1) for ip in v4),
        routes=(RouteConfig("0.0.0.0/0", GATEWAY),),
    )
    return result.to_dict(conf.cni_version)


def cmd_del(env: CniEnv, data: bytes, environ: Mapping[str, str],
            shared: SharedBackend | None = None) -> None:
    inv = Invocation(env, data, environ, shared)
    errors: list[CniError] = []
    try:
        w = inv.workload()
    except TryAgainLater as exc:
        # No node name yet (the agent has not written it): the endpoint's name is
        # unknown, but the interface and the handle's addresses can go now. Report
        # the error so that the runtime retries and the endpoint follows.
        errors.append(exc)
        w = identify(inv.conf.name, "unknown", env.container_id, env.ifname, inv.cni_args)

    def attempt(step: Callable[[], object]) -> None:
        try:
            step()
        except CniError as exc:
            _log.error("DEL step failed: %s", exc)
            errors.append(exc)

    try:
        if env.netns:
            attempt(lambda: wiring.unwire(env.netns_path, env.ifname))
        if not errors:
            attempt(lambda: inv.backend().delete_endpoint(w.namespace, w.endpoint_name,
                                                          w.container_id))
        attempt(lambda: inv.ipam(w).delete())
    finally:
        inv.backend.close()
    if errors:
        raise errors[0]
    _log.info("%s: deleted", w.describe())


def cmd_check(env: CniEnv, data: bytes, environ: Mapping[str, str],
            shared: SharedBackend | None = None) -> None:
    inv = Invocation(env, data, environ, shared)
    conf = inv.conf
    if not supports_check(conf.cni_version):
        raise IncompatibleVersion(f"CHECK is not defined for cniVersion {conf.cni_version}; "
                                  "it exists from 0.4.0")
    prev = conf.prev_result
    if prev is None:
        raise InvalidConfig("CHECK needs prevResult (the result of ADD) in the network "
                            "configuration")
    w = inv.workload()
    if not wiring.netns_exists(env.netns_path):
        raise ContainerUnknown(f"the container's network namespace {env.netns} does not exist")
    problems: list[str] = []
    names = [i.name for i in prev.interfaces]
    for want in (w.veth_name, env.ifname):
        if want not in names:
            problems.append(f"prevResult lists no interface {want} (it lists "
                            f"{', '.join(names) or 'none'})")
    v4 = tuple(ip.ip for ip in prev.ips if ip.version == "4")
    if not v4:
        problems.append("prevResult has no IPv4 address")
    try:
        try:
            inv.ipam(w).check(prev)
        except CheckFailed as exc:
            problems.append(exc.msg)
        plan = wiring.VethPlan(w.veth_name, env.ifname, env.netns_path, 0, w.container_mac, v4)
        problems += wiring.problems(plan, wiring.observe(plan))
        wep = inv.backend().get_endpoint(w.namespace, w.endpoint_name)
    finally:
        inv.backend.close()
    if wep is None:
        problems.append(f"WorkloadEndpoint {w.namespace}/{w.endpoint_name} does not exist")
    else:
        spec = wep.get("spec") or {}
        nets = sorted(spec.get("ipNetworks") or ())
        if nets != sorted(f"{ip}/32" for ip in v4):
            problems.append(f"WorkloadEndpoint {w.namespace}/{w.endpoint_name} has ipNetworks "
                            f"{', '.join(nets) or 'none'}, not {', '.join(v4)}")
        if spec.get("interfaceName") != w.veth_name:
            problems.append(f"WorkloadEndpoint {w.namespace}/{w.endpoint_name} names interface "
                            f"{spec.get('interfaceName')}, not {w.veth_name}")
    if problems:
        raise CheckFailed(f"CHECK of {w.describe()} failed: " + "; ".join(problems))
    return None


def main() -> None:
    plugin_main("tortie-cni", cmd_add, cmd_del, cmd_check)


if __name__ == "__main__":
    main()
