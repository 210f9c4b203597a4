"""Kubernetes mode: what ADD learns about a pod from the Kubernetes API server.

Owns the one conversation the plugin has with Kubernetes (Calico's
cni-plugin/pkg/k8s/k8s.go getK8sNSInfo and getK8sPodInfo): GET the pod's
namespace, then GET the pod, with the official `kubernetes` client, and turn
them into what the rest of the plugin already understands (`KubernetesPod`):

  * labels, service account, named container ports: a `PodArgs`, validated by
    the same code as `args.cni` (cni/config.py), which they replace;
  * `cni.projectcalico.org/ipAddrs`: the specific addresses to assign (a JSON
    list; at most one IPv4 address, as Calico);
  * `cni.projectcalico.org/ipv4pools`: the pools (names or CIDRs) the
    assignment is restricted to, the pod's annotation over its namespace's, as
    Calico; it replaces the conflist's `ipam.ipv4_pools`.

Invariants: the client is imported only here and only in Kubernetes mode (it
costs ~0.3 s to import; the CNI server pays it once); each request has a short
timeout and no retries, so an unreachable API server costs ADD at most
REQUEST_TIMEOUT per request, and fails it with code 11 naming the server and
URL (the kubelet retries). `convert` is pure and holds every rule above.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .config import KubernetesConf, PodArgs, parse_requested_ip, pool_list, workload_args
from .errors import (
    CniError,
    ContainerUnknown,
    InvalidConfig,
    TryAgainLater,
    UnsupportedField,
)

_log = logging.getLogger(__name__)

# Seconds for one request (connect and read): Calico's plugin tests its connection with
# 2 s; a GET of one pod from a healthy API server takes milliseconds.
REQUEST_TIMEOUT = 5.0
IP_ADDRS = "cni.projectcalico.org/ipAddrs"
IP_ADDRS_NO_IPAM = "cni.projectcalico.org/ipAddrsNoIpam"
IPV4_POOLS = "cni.projectcalico.org/ipv4pools"
IPV6_POOLS = "cni.projectcalico.org/ipv6pools"


class KubernetesPod(NamedTuple):
    """What ADD takes from the pod and its namespace."""

    pod: PodArgs
    ip_addrs: tuple[str, ...] = ()  # from the ipAddrs annotation
    ipv4_pools: tuple[str, ...] | None = None  # None: no annotation, the conflist decides


def convert(pod: Mapping[str, Any], namespace: Mapping[str, Any]) -> KubernetesPod:
    """A pod and its namespace (API JSON, as served) -> KubernetesPod. Pure."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    where = f"pod {meta.get('namespace')}/{meta.get('name')}"
    ports: list[dict[str, Any]] = []
    seen: set[str] = set()
    for container in spec.get("containers") or ():
        for port in container.get("ports") or ():
            # An unnamed port matters to Calico only for its hostPort (portmap's job here);
            # a name used by two containers is kept once, as policy can match only one.
            name = port.get("name")
            if not name or name in seen:
                continue
            seen.add(name)
            ports.append({"name": name, "containerPort": port.get("containerPort"),
                          "protocol": port.get("protocol") or "TCP"})
    labels = [{"key": k, "value": v} for k, v in (meta.get("labels") or {}).items()]
    args = workload_args({"labels": labels, "ports": ports,
                          "serviceAccountName": spec.get("serviceAccountName")}, where)

    annotations: Mapping[str, str] = meta.get("annotations") or {}
    ns_annotations: Mapping[str, str] = (namespace.get("metadata") or {}).get(
        "annotations") or {}
    if annotations.get(IP_ADDRS_NO_IPAM):
        raise UnsupportedField(f"{where} annotation {IP_ADDRS_NO_IPAM}",
                               annotations[IP_ADDRS_NO_IPAM],
                               "requested feature is not enabled: ip_addrs_no_ipam")
    for source, notes in ((where, annotations),
                          (f"namespace {meta.get('namespace')}", ns_annotations)):
        if notes.get(IPV6_POOLS):
            raise UnsupportedField(f"{source} annotation {IPV6_POOLS}", notes[IPV6_POOLS],
                                   "tortie does not assign IPv6 addresses yet")
    ip_addrs = _ip_addrs(annotations.get(IP_ADDRS), where)
    pools: tuple[str, ...] | None = None
    # The namespace's annotation is the default; the pod's, when non-empty, replaces it.
    for source, notes in ((f"namespace {meta.get('namespace')}", ns_annotations),
                          (where, annotations)):
        if notes.get(IPV4_POOLS):
            pools = pool_list(_json(notes[IPV4_POOLS], f"{source} annotation {IPV4_POOLS}"),
                              f"{source} annotation {IPV4_POOLS}")
    return KubernetesPod(args, ip_addrs, pools)


def _json(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidConfig(f"{what}={text!r}: failed to parse '{text}' as JSON: "
                            f"{exc}") from None


def _ip_addrs(text: str | None, where: str) -> tuple[str, ...]:
    """Calico's validateAndExtractIPs for the ipAddrs annotation, IPv4 only."""
    if text is None or text == "":
        return ()
    what = f'{where} annotation "{IP_ADDRS}"'
    value = _json(text, what)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidConfig(f"{what}={text!r} must be a JSON list of addresses, "
                            'e.g. ["10.65.0.7"]')
    if not value:
        raise InvalidConfig(f"{what} specified but empty")
    ips = tuple(parse_requested_ip(v, f"{what}[{i}]") for i, v in enumerate(value))
    if len(ips) > 1:
        raise InvalidConfig(f"{what}={text!r}: cannot have more than one IPv4 address for "
                            f'"{IP_ADDRS}" annotation')
    return ips


# -- the API server ------------------------------------------------------------------------


def read_pod(conf: KubernetesConf, namespace: str, name: str) -> KubernetesPod:
    """GET the namespace and the pod from the API server and convert them.

    Errors: TryAgainLater (11) when the API server cannot be reached, times out or
    answers 5xx/429; ContainerUnknown (3) when the pod does not exist; InvalidConfig
    (7) for credentials it refuses (401/403) or a kubeconfig that cannot be loaded.
    """
    from kubernetes.client import CoreV1Api

    api = _client(conf)
    core = CoreV1Api(api)
    try:
        ns_doc = _get(api, f"/api/v1/namespaces/{namespace}", f"namespace {namespace}",
                      lambda **kw: core.read_namespace(namespace, **kw))
        pod_doc = _get(api, f"/api/v1/namespaces/{namespace}/pods/{name}",
                       f"pod {namespace}/{name}",
                       lambda **kw: core.read_namespaced_pod(name, namespace, **kw))
    finally:
        api.close()
    result = convert(pod_doc, ns_doc)
    _log.info("pod %s/%s from Kubernetes: %d labels, service account %s, %d named ports%s%s",
              namespace, name, len(result.pod.labels), result.pod.service_account or "none",
              len(result.pod.ports),
              f", ipAddrs {list(result.ip_addrs)}" if result.ip_addrs else "",
              f", ipv4pools {list(result.ipv4_pools)}" if result.ipv4_pools else "")
    return result


def _client(conf: KubernetesConf) -> Any:
    """An ApiClient from the kubeconfig (or in-cluster credentials), `k8s_api_root` over
    its server, no retries (one failure is reported at once; the kubelet retries ADD)."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    cfg = k8s_client.Configuration()
    try:
        if conf.kubeconfig:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=conf.kubeconfig, client_configuration=cfg)
        else:
            # The process's own pod credentials (the CNI server's, if its pod has a
            # token); without them k8s_api_root is used with no credentials.
            try:
                k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=cfg)
            except k8s_config.ConfigException:
                _log.debug("no in-cluster credentials: %s without authentication",
                           conf.api_root)
    except (k8s_config.ConfigException, OSError, ValueError, TypeError) as exc:
        where = (f"kubernetes.kubeconfig={json.dumps(conf.kubeconfig)}" if conf.kubeconfig
                 else "the in-cluster service account")
        raise InvalidConfig(f"error building Kubernetes client config from {where}: "
                            f"{exc}") from None
    if conf.api_root:
        cfg.host = conf.api_root
    cfg.retries = False
    return k8s_client.ApiClient(cfg)


def _get(api: Any, path: str, what: str, read: Callable[..., Any]) -> dict[str, Any]:
    """`read` (a CoreV1Api call of `path`) as JSON, undecoded by the client's models (we
    need a few fields); the client's exceptions as CNI errors (see read_pod)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    server = api.configuration.host
    url = server.rstrip("/") + path
    try:
        body = read(_preload_content=False, _request_timeout=REQUEST_TIMEOUT).data
    except ApiException as exc:
        raise _http_error(exc.status, exc.reason, exc.body, what, server, url) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise TryAgainLater(f"error getting {what} from the Kubernetes API server {server}: "
                            f'Get "{url}": {reason}',
                            "is the API server running and reachable from this node?"
                            ) from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise TryAgainLater(f"error getting {what} from the Kubernetes API server {server}: "
                            f'Get "{url}": the answer is not JSON',
                            body[:200].decode(errors="replace")) from None
    if not isinstance(doc, dict):
        raise TryAgainLater(f"error getting {what} from the Kubernetes API server {server}: "
                            f'Get "{url}": the answer is not an object')
    return doc


def _http_error(status: int | None, reason: str | None, body: object, what: str,
                server: str, url: str) -> CniError:
    message = reason or ""
    if isinstance(body, (bytes, str)):
        try:
            message = json.loads(body).get("message") or message
        except (ValueError, AttributeError):
            pass
    text = f"error getting {what} from the Kubernetes API server {server}: {message} ({status})"
    if status == 404:
        return ContainerUnknown(text, f'Get "{url}"')
    if status in (401, 403):
        return InvalidConfig(text, "the kubeconfig's credentials must allow get on pods and "
                                   "namespaces (the chart's ClusterRole tortie-cni)")
    return TryAgainLater(text, f'Get "{url}"')
