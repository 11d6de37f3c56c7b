"""deploy/kubernetes/, checked offline.

* The generated PrometheusRules and dashboard ConfigMaps are what the generator makes from
  alerts/*.rules.yml and dashboards/*.json today (and the check notices a change).
* Every manifest validates against the Kubernetes schemas of a current release
  (kubernetes-validate, strict: unknown fields fail) or, for PodMonitor and PrometheusRule,
  against the Prometheus Operator's CRD schemas vendored in tests/k8s_schemas/.
* The PrometheusRules' embedded rules pass `promtool check rules` and every promtool test
  in tests/alerts/ when run against the rules extracted from the manifests.
* Each kustomization lists exactly its files, and `kustomize build` (standalone or
  `kubectl kustomize`) renders the same objects, where either tool is installed.
* Least privilege holds: token-less ServiceAccount, no RBAC objects, non-root, read-only
  root filesystem, no privilege escalation, every capability dropped.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from helpers import require_binary

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
SCHEMAS = ROOT / "tests" / "k8s_schemas"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.glob("*/kustomization.yaml"))
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_v1_podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.json",
}
SCRAPE_LABEL = ("prepwatch/scrape", "true")


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("prepwatch_k8s_generate", K8S / "generate.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _all_objects() -> Iterator[tuple[str, dict]]:
    for path in MANIFESTS:
        for doc in _docs(path):
            yield f"{path.relative_to(K8S)}: {doc['kind']}/{doc['metadata']['name']}", doc


def _pod_specs(obj: dict) -> list[dict]:
    """Pod templates of workload objects, the Kubeflow PyTorchJob's replicas included."""
    if obj["kind"] in ("Job", "DaemonSet", "Deployment", "StatefulSet"):
        return [obj["spec"]["template"]]
    if obj["kind"] == "PyTorchJob":
        return [r["template"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
    return []


# ---------------------------------------------------------------- generated objects

def test_generated_files_are_current() -> None:
    res = subprocess.run([sys.executable, str(K8S / "generate.py"), "--check"],
                         capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert res.returncode == 0, res.stdout + res.stderr
    for path, content in _generator().render().items():
        assert path.read_text(encoding="utf-8") == content, f"{path} is stale"


def test_the_check_notices_a_changed_source(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "alerts", tmp_path / "alerts")
    shutil.copytree(ROOT / "dashboards", tmp_path / "dashboards")
    gen = _generator()
    same = gen.render(tmp_path)
    rule = sorted((tmp_path / "alerts").glob("*.rules.yml"))[0]
    rule.write_text(rule.read_text().replace("for: ", "for: 1", 1) if "for: " in rule.read_text()
                    else rule.read_text() + "\n# changed\n")
    board = sorted((tmp_path / "dashboards").glob("*.json"))[0]
    board.write_text(board.read_text().replace('"title"', '"title" ', 1))
    changed = gen.render(tmp_path)
    assert changed[gen.RULES_OUT] != same[gen.RULES_OUT]
    assert changed[gen.DASHBOARDS_OUT] != same[gen.DASHBOARDS_OUT]


def test_one_prometheusrule_per_rule_file_with_its_exact_rules() -> None:
    rules = {d["metadata"]["name"]: d for d in _docs(K8S / "monitoring" / "prometheusrules.yaml")}
    sources = sorted((ROOT / "alerts").glob("*.rules.yml"))
    assert len(rules) == len(sources)
    for src in sources:
        name = "prepwatch-" + src.name[: -len(".rules.yml")].replace("_", "-")
        assert rules[name]["spec"] == yaml.safe_load(src.read_text()), name


def test_one_dashboard_configmap_per_dashboard_labelled_for_the_sidecar() -> None:
    maps = _docs(K8S / "monitoring" / "dashboards.yaml")
    sources = sorted((ROOT / "dashboards").glob("*.json"))
    assert len(maps) == len(sources)
    by_key = {}
    for cm in maps:
        assert cm["kind"] == "ConfigMap"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (key,) = cm["data"]
        by_key[key] = cm["data"][key]
    for src in sources:
        assert by_key[src.name] == src.read_text(encoding="utf-8")
        assert json.loads(by_key[src.name])["uid"]


# ---------------------------------------------------------------- schemas

def _closed(schema: Any) -> Any:
    """Objects that list their properties admit no others (the API server would prune a
    misspelt field without a word; here it fails)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if isinstance(out.get("pattern"), str) and out["pattern"].startswith("^(?i)"):
            out["pattern"] = "(?i)^" + out["pattern"][5:]  # Go's inline flag, where Python wants it
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _validate(obj: dict) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_SCHEMAS:
        import jsonschema

        schema = _closed(json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text()))
        jsonschema.Draft7Validator(schema).validate(obj)
        return
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    if obj["kind"] == "PyTorchJob":  # no schema here for Kubeflow's CRD: validate its pods
        for template in _pod_specs(obj):
            kubernetes_validate.validate(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                 "template": template}, version, strict=True)
        return
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("where,obj", list(_all_objects()), ids=lambda x: x if isinstance(x, str) else "")
def test_manifest_validates(where: str, obj: dict) -> None:
    pytest.importorskip("kubernetes_validate")
    _validate(obj)


def test_validation_can_fail() -> None:
    """A misspelt field in each kind of schema is caught (the checks are not vacuous)."""
    pytest.importorskip("kubernetes_validate")
    import jsonschema
    import kubernetes_validate

    ds = copy.deepcopy(_docs(K8S / "node-agent" / "daemonset.yaml")[0])
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(ds)
    pm = copy.deepcopy(_docs(K8S / "training" / "podmonitor.yaml")[0])
    pm["spec"]["podMetricsEndpoints"][0]["portName"] = "metrics"
    with pytest.raises(jsonschema.ValidationError):
        _validate(pm)
    pr = copy.deepcopy(_docs(K8S / "monitoring" / "prometheusrules.yaml")[0])
    pr["spec"]["groups"][0]["rules"][0]["expression"] = "up"
    with pytest.raises(jsonschema.ValidationError):
        _validate(pr)


# ---------------------------------------------------------------- rules through promtool

def _extract_rules(tmp_path: Path) -> Path:
    out = tmp_path / "extracted"
    out.mkdir()
    for doc in _docs(K8S / "monitoring" / "prometheusrules.yaml"):
        stem = doc["metadata"]["name"][len("prepwatch-"):].replace("-", "_")
        (out / f"{stem}.rules.yml").write_text(yaml.safe_dump(doc["spec"], sort_keys=False))
    return out


def test_embedded_rules_pass_promtool_check_and_the_unit_tests(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules_dir = _extract_rules(tmp_path)
    files = sorted(rules_dir.glob("*.rules.yml"))
    res = subprocess.run([promtool, "check", "rules", *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    tests = sorted((ROOT / "tests" / "alerts").glob("*.test.yml"))
    assert tests
    for test in tests:
        spec = yaml.safe_load(test.read_text())
        spec["rule_files"] = [str(rules_dir / Path(f).name) for f in spec["rule_files"]]
        for f in spec["rule_files"]:
            assert Path(f).exists(), f"{test.name} reads {f}, which no PrometheusRule carries"
        copy_path = tmp_path / test.name
        copy_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        res = subprocess.run([promtool, "test", "rules", str(copy_path)],
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, f"{test.name}\n{res.stdout}{res.stderr}"


# ---------------------------------------------------------------- kustomize

def test_kustomizations_list_exactly_their_files() -> None:
    assert {p.name for p in KUSTOMIZATIONS} == {"monitoring", "training", "node-agent"}
    for kdir in KUSTOMIZATIONS:
        resources = yaml.safe_load((kdir / "kustomization.yaml").read_text())["resources"]
        for res in resources:
            target = (kdir / res).resolve()
            assert target.exists(), f"{kdir.name}: {res} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{kdir.name}: {res} is no kustomization"
        files = {p.name for p in kdir.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert files == {r for r in resources if not r.startswith("..")}, kdir.name


def _expected_objects(kdir: Path) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for res in yaml.safe_load((kdir / "kustomization.yaml").read_text())["resources"]:
        target = (kdir / res).resolve()
        if target.is_dir():
            out |= _expected_objects(target)
        else:
            out |= {(d["kind"], d["metadata"]["name"]) for d in _docs(target)}
    return out


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomize_build(kdir: Path) -> None:
    tool = _kustomize()
    if tool is None:
        pytest.skip("neither kustomize nor kubectl is installed (the file checks above still ran)")
    res = subprocess.run([*tool, str(kdir)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    built = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert {(d["kind"], d["metadata"]["name"]) for d in built} == _expected_objects(kdir)
    pytest.importorskip("kubernetes_validate")
    for obj in built:
        _validate(obj)


# ---------------------------------------------------------------- least privilege

def test_no_rbac_and_a_tokenless_service_account() -> None:
    kinds = {obj["kind"] for _, obj in _all_objects()}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    (sa,) = [o for _, o in _all_objects() if o["kind"] == "ServiceAccount"]
    assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    "where,obj", [(w, o) for w, o in _all_objects() if _pod_specs(o)],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_pods_run_least_privileged(where: str, obj: dict) -> None:
    for template in _pod_specs(obj):
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"] == "prepwatch", where
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert not sc.get("privileged"), (where, c["name"])
        for c in spec.get("initContainers", []):  # the hostPath chown: CHOWN and nothing else
            sc = c["securityContext"]
            assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where


def test_scraped_pods_match_the_podmonitor() -> None:
    """Pods labelled for the PodMonitor expose the port it scrapes, on the pod IP, and
    name their run from the job (Downward API), as the dashboards' `run` variable needs."""
    (pm,) = _docs(K8S / "training" / "podmonitor.yaml")
    assert pm["spec"]["selector"]["matchLabels"] == dict([SCRAPE_LABEL])
    port = pm["spec"]["podMetricsEndpoints"][0]["port"]
    scraped = 0
    for where, obj in _all_objects():
        for template in _pod_specs(obj):
            labels = template.get("metadata", {}).get("labels", {})
            (c,) = template["spec"]["containers"]
            env = {e["name"]: e for e in c.get("env", [])}
            if labels.get(SCRAPE_LABEL[0]) != SCRAPE_LABEL[1]:
                assert "PREPWATCH_AGENT_DIR" in env, f"{where}: neither scraped nor reporting to an agent"
                continue
            scraped += 1
            assert [p["containerPort"] for p in c["ports"] if p["name"] == port] == [9400], where
            assert "--host=$(POD_IP)" in c["command"], where
            assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", where
            if obj["kind"] != "DaemonSet":
                path = env["PREPWATCH_RUN"]["valueFrom"]["fieldRef"]["fieldPath"]
                assert re.fullmatch(r"metadata\.labels\['[^']+job-name'\]", path), where
    assert scraped >= 3


def test_node_agent_and_its_jobs_share_the_state_dir_and_uid() -> None:
    (ds,) = _docs(K8S / "node-agent" / "daemonset.yaml")
    (job,) = _docs(K8S / "examples" / "node-agent-job.yaml")
    agent_spec, job_spec = ds["spec"]["template"]["spec"], job["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in agent_spec["volumes"] if "hostPath" in v}
    (agent_c,) = agent_spec["containers"]
    mounted = {m["mountPath"] for m in agent_c["volumeMounts"] if m["name"] in host}
    assert f"--state-dir={mounted.pop()}" in agent_c["command"]
    (job_c,) = job_spec["containers"]
    job_host = {v["name"]: v["hostPath"]["path"] for v in job_spec["volumes"] if "hostPath" in v}
    assert set(job_host.values()) == set(host.values())
    agent_dir = {e["name"]: e.get("value") for e in job_c["env"]}["PREPWATCH_AGENT_DIR"]
    assert agent_dir in {m["mountPath"] for m in job_c["volumeMounts"] if m["name"] in job_host}
    assert agent_spec["securityContext"]["runAsUser"] == job_spec["securityContext"]["runAsUser"]
    (init,) = agent_spec["initContainers"]
    uid = agent_spec["securityContext"]["runAsUser"]
    assert f"chown {uid}:{uid}" in " ".join(init["command"])
    assert "--no-process-tree" in agent_c["command"]  # the ranks' pids are from other namespaces
    nvidia = {e["name"]: e.get("value") for e in agent_c["env"]}
    assert nvidia["NVIDIA_VISIBLE_DEVICES"] == "all" and nvidia["NVIDIA_DRIVER_CAPABILITIES"] == "utility"


def test_agent_network_policy_admits_only_scrapes() -> None:
    (np_,) = _docs(K8S / "node-agent" / "networkpolicy.yaml")
    spec = np_["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["egress"] == []
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (ds,) = _docs(K8S / "node-agent" / "daemonset.yaml")
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in spec["podSelector"]["matchLabels"].items())
