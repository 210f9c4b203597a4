"""The chart rendered by the real Helm (3 and 4) for every value set of the matrix, and
checked: helm lint --strict, yamllint, kubernetes-validate --strict against every
Kubernetes minor from 1.28, tortie's own parsers for the Calico resources and the conflist,
and the cross-checks against the code (environment, commands, references)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from yamllint import config as yamllint_config
from yamllint import linter

from agent.startup_resources import load_startup_resources

from .chart import (
    CHART,
    NAMESPACE,
    VALUE_SETS,
    Rendered,
    chart_defaults,
    conflist,
    containers,
    dump,
    env_value,
    find,
    helm,
    invalid_for_kubernetes,
    kubernetes_versions,
    missing_offline,
    needed_in_image,
    startup_documents,
    unknown_env,
    unresolved,
)

YAMLLINT = yamllint_config.YamlLintConfig(
    "{extends: default, rules: {line-length: {max: 120}}}")


def _merged(values: dict, defaults: dict) -> dict:
    out = dict(defaults)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(value, out[key])
        else:
            out[key] = value
    return out


def _container(r: Rendered, name: str) -> dict:
    for where, c in containers(r.objects):
        if where == f"tortie-node/{name}":
            return c
    raise AssertionError(f"no container {name} in the DaemonSet")


def test_every_helm_renders_the_same(renderings: dict[str, Rendered]) -> None:
    if len(renderings) < 2:
        pytest.skip(f"only Helm {', '.join(renderings)} fetched; nothing to compare")
    (first, a), *rest = renderings.items()
    for version, b in rest:
        assert a.objects == b.objects, f"Helm {first} and {version} render differently"


def test_helm_lint_strict(value_set: str, helms: dict[str, Path], values_dir: Path) -> None:
    for version, binary in helms.items():
        done = helm(binary, "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                    "--values", str(values_dir / f"{value_set}.yaml"))
        assert done.returncode == 0, f"Helm {version}: {done.stdout}{done.stderr}"
        assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


def test_yamllint(rendered: Rendered) -> None:
    problems = [f"{p.line}:{p.column} {p.message}"
                for p in linter.run(rendered.text, YAMLLINT)]
    assert problems == []


def test_kubernetes_validate_strict(rendered: Rendered) -> None:
    versions = kubernetes_versions("1.28")
    assert versions[0] == "1.28.0" and len(versions) >= 10, versions
    calico = [o for o in rendered.objects if o["apiVersion"].startswith("projectcalico.org/")]
    assert calico == [], "Calico kinds belong in the start-up resources, not the chart's objects"
    assert invalid_for_kubernetes(rendered.objects, versions) == []


def test_startup_resources_are_what_the_agent_reads(rendered: Rendered, tmp_path: Path) -> None:
    """The ConfigMap's startup_resources.yaml, read by the agent's own reader (which
    validates every document, names and pool overlaps), holds exactly the values' objects."""
    merged = _merged(rendered.values, chart_defaults())
    want = ([("IPPool", p["name"], p["spec"]) for p in merged["ipPools"]]
            + ([("BGPConfiguration", "default", merged["bgpConfiguration"])]
               if merged["bgpConfiguration"] else [])
            + [("BGPPeer", p["name"], p["spec"]) for p in merged["bgpPeers"]])
    path = tmp_path / "startup_resources.yaml"
    path.write_bytes(startup_documents(rendered.objects))
    resources = load_startup_resources(str(path))
    assert [(r.kind, r.metadata.name) for r in resources] == [(k, n) for k, n, _ in want]
    for resource, (_, _, spec) in zip(resources, want, strict=True):
        assert resource.apiVersion == "projectcalico.org/v3"
        # Nothing the values said was dropped on the way.
        stored = resource.model_dump(mode="json", exclude_none=True)["spec"]
        assert stored.items() >= spec.items(), dump(stored)


def test_conflist_is_what_the_plugin_accepts(rendered: Rendered) -> None:
    from cni.config import parse

    merged = _merged(rendered.values, chart_defaults())
    doc = conflist(rendered.objects)
    main = {"cniVersion": doc["cniVersion"], "name": doc["name"], **doc["plugins"][0]}
    conf = parse(json.dumps(main).encode())
    paths = merged["hostPaths"]
    # The plugin runs on the host: every path in it is a host path from hostPaths.
    assert conf.server_socket == f"{paths['varRunTortie']}/cni.sock"
    assert main["mtu_file"] == f"{paths['varLibCalico']}/mtu"
    assert main["nodename_file"] == f"{paths['varLibCalico']}/nodename"
    assert main["endpoint_status_dir"] == f"{paths['varRunCalico']}/endpoint-status"
    chained = [p["type"] for p in doc["plugins"][1:]]
    assert chained == [t for t, on in (("portmap", merged["cni"]["portmap"]),
                                       ("bandwidth", merged["cni"]["bandwidth"])) if on]
    install = _container(rendered, "install-cni")
    assert env_value(rendered.objects, install, "CNI_SERVER_SOCKET") == conf.server_socket
    assert env_value(rendered.objects, install, "CNI_LOG_FILE_PATH") == \
        f"{paths['cniLogDir']}/cni.log"
    # The CNI server listens where the host's varRunTortie is mounted in its container.
    server = _container(rendered, "tortie-cni-server")
    socket = server["command"][server["command"].index("--socket") + 1]
    mount = next(m for m in server["volumeMounts"] if m["name"] == "var-run-tortie")
    assert socket == f"{mount['mountPath']}/cni.sock"


def test_kubernetes_mode_token_rbac_and_kubeconfig(rendered: Rendered) -> None:
    """cni.kubernetesMode: the token reaches install-cni alone, the kubeconfig it writes is
    what the conflist names (a host path) and the CNI server mounts it; the RBAC is `get`
    on pods and namespaces, bound to the pods' ServiceAccount; without it, none of this."""
    from cni.config import parse

    merged = _merged(rendered.values, chart_defaults())
    on = merged["cni"]["kubernetesMode"]
    doc = conflist(rendered.objects)
    conf = parse(json.dumps({"cniVersion": doc["cniVersion"], "name": doc["name"],
                             **doc["plugins"][0]}).encode())
    net_dir = merged["hostPaths"]["cniConfDir"]
    assert conf.kubernetes.kubeconfig == (f"{net_dir}/tortie-kubeconfig" if on else None)
    ds = find(rendered.objects, "DaemonSet", "tortie-node")
    assert ds is not None
    spec = ds["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    token_users = [where for where, c in containers(rendered.objects)
                   if any(m["name"] == "cni-token" for m in c.get("volumeMounts", []))]
    assert token_users == (["tortie-node/install-cni"] if on else [])
    server_mounts = {m["mountPath"]: m for m in _container(rendered, "tortie-cni-server")
                     ["volumeMounts"]}
    assert (net_dir in server_mounts) == on
    role = find(rendered.objects, "ClusterRole", "tortie-cni")
    binding = find(rendered.objects, "ClusterRoleBinding", "tortie-cni")
    if not on:
        assert role is None and binding is None
        return
    assert role is not None and binding is not None
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "namespaces"],
                              "verbs": ["get"]}]
    assert binding["roleRef"]["name"] == "tortie-cni"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": NAMESPACE,
                                    "name": merged["serviceAccount"]["name"]}]
    token = next(v for v in spec["volumes"] if v["name"] == "cni-token")
    sources = token["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert sources[1]["configMap"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_host_paths_come_from_values(rendered: Rendered) -> None:
    merged = _merged(rendered.values, chart_defaults())
    ds = find(rendered.objects, "DaemonSet", "tortie-node")
    assert ds is not None
    host = {v["name"]: v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"]
            if "hostPath" in v}
    paths = merged["hostPaths"]
    assert host == {"cni-bin-dir": paths["cniBinDir"], "cni-net-dir": paths["cniConfDir"],
                    "cni-log-dir": paths["cniLogDir"], "var-run-calico": paths["varRunCalico"],
                    "var-lib-calico": paths["varLibCalico"],
                    "var-run-tortie": paths["varRunTortie"], "xtables-lock": paths["xtablesLock"]}


def test_every_environment_variable_is_read_by_its_program(rendered: Rendered) -> None:
    assert unknown_env(rendered.objects) == []


def test_every_reference_resolves(rendered: Rendered) -> None:
    assert unresolved(rendered.objects, rendered.values) == []


def test_every_command_and_path_is_in_the_image(rendered: Rendered) -> None:
    needed = needed_in_image(rendered.objects)
    assert ("tortie-agent", "/opt/tortie/bin/tortie-agent") in needed
    assert missing_offline(needed) == []


def test_the_daemonset_is_shaped_like_calico_node(rendered: Rendered) -> None:
    merged = _merged(rendered.values, chart_defaults())
    ds = find(rendered.objects, "DaemonSet", "tortie-node")
    assert ds is not None
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 1}}
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == merged["priorityClass"]["name"]
    assert spec["tolerations"] == merged["tolerations"]
    assert [c["name"] for c in spec["initContainers"]] == ["install-cni"]
    bgp = merged["backend"] in ("bird", "exabgp")
    sidecar = bgp and merged["bgp"]["sidecar"]
    assert [c["name"] for c in spec["containers"]] == \
        ["tortie-node", *(["tortie-bgp"] if sidecar else []), "tortie-cni-server"]
    for c in [*spec["initContainers"], *spec["containers"]]:
        assert c["securityContext"] == {"privileged": True}, c["name"]
        assert c["resources"]["requests"], c["name"]
    agent = _container(rendered, "tortie-node")
    assert agent["livenessProbe"]["exec"]["command"] == ["tortie-agent", "--live"]
    assert agent["readinessProbe"]["exec"]["command"] == ["tortie-agent", "--ready"]
    assert env_value(rendered.objects, agent, "TORTIE_BGP_SIDECAR") == ("true" if sidecar else None)
    assert env_value(rendered.objects, agent, "CALICO_NETWORKING_BACKEND") == merged["backend"]
    assert env_value(rendered.objects, agent, "FELIX_HEALTHENABLED") == "true"
    if sidecar:
        side = _container(rendered, "tortie-bgp")
        assert side["readinessProbe"]["exec"]["command"] == ["tortie-bgp", "--ready"]
        assert side["livenessProbe"]["exec"]["command"] == ["tortie-bgp", "--live"]


def test_etcd_tls_files_are_where_the_secret_is_mounted(rendered: Rendered) -> None:
    merged = _merged(rendered.values, chart_defaults())
    tls = merged["etcd"]["tls"]
    for where, c in containers(rendered.objects):
        files = {n: env_value(rendered.objects, c, n)
                 for n in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE")}
        if not tls["enabled"]:
            assert files == dict.fromkeys(files), where
            continue
        assert None not in files.values(), where
        if where.endswith("install-cni"):
            continue  # it only writes these paths into the conflist, for the CNI server
        mount = next(m for m in c["volumeMounts"] if m["name"] == "etcd-certs")
        keys = {"etcd-ca", "etcd-cert", "etcd-key"}
        assert {f"{mount['mountPath']}/{k}" for k in keys} == set(files.values()), where
    secret = find(rendered.objects, "Secret", "tortie-etcd-secrets")
    assert (secret is not None) == (tls["enabled"] and not tls["existingSecret"])


def test_bgp_passwords_are_mounted_where_the_bgp_side_reads_them(rendered: Rendered) -> None:
    from bgp.secrets import DEFAULT_DIR

    merged = _merged(rendered.values, chart_defaults())
    names = set(merged["bgpPasswordSecrets"])
    names |= {p["spec"]["password"]["secretKeyRef"]["name"] for p in merged["bgpPeers"]
              if "password" in p["spec"]}
    bgp = merged["backend"] in ("bird", "exabgp")
    reader = "tortie-bgp" if merged["bgp"]["sidecar"] else "tortie-node"
    for where, c in containers(rendered.objects):
        mounted = {m["mountPath"] for m in c.get("volumeMounts", [])
                   if m["mountPath"].startswith(DEFAULT_DIR + "/")}
        want = {f"{DEFAULT_DIR}/{n}" for n in names} if bgp and where.endswith(reader) else set()
        assert mounted == want, where
        if want:
            assert env_value(rendered.objects, c, "TORTIE_BGP_SECRETS_DIR") == DEFAULT_DIR


def test_value_sets_cover_the_matrix() -> None:
    backends = {v.get("backend", "bird") for v in VALUE_SETS.values()}
    assert backends == {"bird", "exabgp", "vxlan", "none"}
    modes = {(p["spec"].get("ipipMode", "Never"), p["spec"].get("vxlanMode", "Never"))
             for v in VALUE_SETS.values() for p in v.get("ipPools", [])}
    assert {("Always", "Never"), ("Never", "Always"), ("Never", "Never")} <= modes
