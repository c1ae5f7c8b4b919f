"""`cairn deploy kubernetes` and deploy/kubernetes/, tested without a cluster (none
runs on these machines): the committed base is what the command makes of the
default stack; `kubectl kustomize` renders the base and every overlay; every object
passes the Kubernetes API schemas (npm kubernetes-models) with no field the API does
not have; the ConfigMap's stack passes `cairn check` and every service it names
exists with that port; stacks that cannot be deployed are refused with
file:line:col."""
import filecmp
import json
import os
import re
import subprocess

import requests
import yaml

from conftest import ROOT, free_port, run_cairn, wait_for, write_stack

K8S = os.path.join(ROOT, "deploy", "kubernetes")
NODE_DIR = os.path.join(ROOT, "tests", "integration", "node")
OVERLAYS = ["base", "overlays/production", "overlays/ceph-block"]


def render(path):
    r = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def validate(docs):
    r = subprocess.run(["node", os.path.join(NODE_DIR, "k8s_validate.mjs")], input=json.dumps(docs), cwd=NODE_DIR,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_committed_base_is_the_default_stack_rendered(tmp_path):
    out = tmp_path / "base"
    r = run_cairn(["deploy", "kubernetes", "-o", str(out)])
    assert r.returncode == 0, r.stderr
    assert "15 services" in r.stdout
    mine, committed = sorted(os.listdir(out)), sorted(os.listdir(os.path.join(K8S, "base")))
    assert mine == committed
    _, mismatch, errors = filecmp.cmpfiles(out, os.path.join(K8S, "base"), mine, shallow=False)
    assert not mismatch and not errors, f"deploy/kubernetes/base is stale: regenerate it ({mismatch})"


def test_every_overlay_renders_and_passes_the_api_schemas():
    for o in OVERLAYS:
        docs = render(os.path.join(K8S, o))
        v = validate(docs)
        assert v["checked"] == len(docs) and v["errors"] == [], (o, v["errors"][:10])
    # the schema check does catch a wrong type and an invented field
    docs = render(os.path.join(K8S, "base"))
    bad = json.loads(json.dumps(docs))
    dep = next(d for d in bad if d["kind"] == "Deployment")
    dep["spec"]["replicas"] = "two"
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    errs = validate(bad)["errors"]
    assert any("replicas must be integer" in e for e in errs)
    assert any("readOnlyRootFilesytem: not a field" in e for e in errs)


def test_the_base_objects():
    docs = render(os.path.join(K8S, "base"))
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    assert set(by["Deployment"]) == {"dns", "cdn", "lb", "console", "app-1", "app-2", "app-3"}
    assert set(by["StatefulSet"]) == {"metrics", "alerts", "logs", "traces", "s3", "registry", "backup"}
    assert set(by["DaemonSet"]) == {"log-agent"}
    assert len(by["Service"]) == 15 and len(by["NetworkPolicy"]) == 15 and len(by["PodDisruptionBudget"]) == 14
    (cm_name, cm), = by["ConfigMap"].items()
    assert cm_name.startswith("cairn-stack-")
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        for name, d in by[kind].items():
            pod = d["spec"]["template"]["spec"]
            c = pod["containers"][0]
            assert c["args"] == ["run", name, "-c", "/etc/cairn/stack.yaml"]
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            if name == "metrics":      # it lists the namespace's pods (kubernetes_sd_configs)
                assert pod["serviceAccountName"] == "metrics" and pod["automountServiceAccountToken"] is True
            else:
                assert pod["automountServiceAccountToken"] is False
            if kind != "DaemonSet":
                assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
            port = int(d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
            assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": port}
            assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": port}
            assert {p["containerPort"]: p["name"] for p in c["ports"]}[port] == "metrics"
            vols = {v["name"]: v for v in pod["volumes"]}
            assert vols["stack"]["configMap"]["name"] == cm_name
            svc = by["Service"][name]
            assert {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]} == \
                {(p["containerPort"], p["protocol"]) for p in c["ports"]}
            if kind == "StatefulSet":
                assert d["spec"]["serviceName"] == name and "data" not in vols
                assert d["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
            elif kind == "Deployment":
                assert "emptyDir" in vols["data"]
    assert {(p["port"], p["protocol"]) for p in by["Service"]["dns"]["spec"]["ports"]} == \
        {(5353, "UDP"), (5353, "TCP"), (9953, "TCP")}
    # the metrics service may list pods, services and endpoints of its namespace, and nothing else
    assert set(by["ServiceAccount"]) == {"metrics"}
    assert by["Role"]["metrics-discovery"]["rules"] == [{"apiGroups": [""], "resources": ["pods", "services", "endpoints"],
                                                          "verbs": ["get", "list", "watch"]}]
    rb = by["RoleBinding"]["metrics-discovery"]
    assert rb["roleRef"]["name"] == "metrics-discovery" and rb["subjects"][0]["name"] == "metrics"
    la = by["DaemonSet"]["log-agent"]["spec"]["template"]["spec"]
    assert any(v.get("hostPath", {}).get("path") == "/var/log" for v in la["volumes"])
    # only the edge and DNS take traffic from outside the cluster, and only on their public ports
    for name, np in by["NetworkPolicy"].items():
        rules = np["spec"]["ingress"]
        open_rules = [r for r in rules if "from" not in r]
        inside = [r for r in rules if "from" in r]
        assert inside == [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "cairn"}}}]}]
        public = {(p["port"], p["protocol"]) for r in open_rules for p in r["ports"]}
        expect = {"cdn": {(8080, "TCP"), (8443, "TCP")}, "lb": {(8090, "TCP")},
                  "dns": {(5353, "UDP"), (5353, "TCP")}}.get(name, set())
        assert public == expect, name
    # the overlays: replicas for what scales out, block storage for the stores
    prod = {(d["kind"], d["metadata"]["name"]): d for d in render(os.path.join(K8S, "overlays/production"))}
    assert prod[("Deployment", "cdn")]["spec"]["replicas"] == 3 and prod[("Deployment", "dns")]["spec"]["replicas"] == 2
    assert prod[("StatefulSet", "metrics")]["spec"]["replicas"] == 1
    assert all(d["metadata"].get("namespace") == "cairn" for k, d in prod.items() if k[0] != "Namespace")
    assert prod[("RoleBinding", "metrics-discovery")]["subjects"][0]["namespace"] == "cairn"
    ceph = {(d["kind"], d["metadata"]["name"]): d for d in render(os.path.join(K8S, "overlays/ceph-block"))}
    pvc = ceph[("StatefulSet", "logs")]["spec"]["volumeClaimTemplates"][0]["spec"]
    assert pvc["storageClassName"] == "ceph-block" and pvc["resources"]["requests"]["storage"] == "200Gi"


def names_in(node, out):
    if isinstance(node, dict):
        for v in node.values():
            names_in(v, out)
    elif isinstance(node, list):
        for v in node:
            names_in(v, out)
    elif isinstance(node, str):
        m = re.fullmatch(r"(?:[a-z]+://)?([a-z][a-z0-9-]*):(\d+)(?:/.*)?", node)
        if m and m.group(1) not in ("localhost",):
            out.add((m.group(1), int(m.group(2))))


def test_the_configmap_stack_checks_and_names_existing_services(tmp_path):
    docs = render(os.path.join(K8S, "base"))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    (tmp_path / "stack.yaml").write_text(cm["data"]["stack.yaml"])
    r = run_cairn(["check", "-c", str(tmp_path / "stack.yaml")])
    assert r.returncode == 0 and "OK, 15 services" in r.stdout, r.stderr
    stack = yaml.safe_load(cm["data"]["stack.yaml"])
    assert stack["advertise"] == "names" and stack["data_dir"] == "/var/lib/cairn"
    # the metrics service discovers the stack's pods, keeping the port named metrics of those annotated
    prom = stack["services"]["metrics"]["prometheus"]
    sd = prom["scrape_configs"][0]
    assert sd["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"own_namespace": True}}]
    assert {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "action": "keep", "regex": "metrics"} in \
        sd["relabel_configs"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alerts:9093"]
    services = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} for d in docs if d["kind"] == "Service"}
    refs = set()
    for name, svc in stack["services"].items():
        for key in ("listen", "admin"):
            for a in ([svc[key]] if isinstance(svc.get(key), str) else svc.get(key, [])):
                addr = a["address"] if isinstance(a, dict) else a
                assert addr.startswith("0.0.0.0:"), (name, addr)
        names_in({k: v for k, v in svc.items() if k not in ("listen", "admin")}, refs)
    assert ("lb", 8090) in refs and ("app-1", 9101) in refs and ("logs", 3100) in refs
    for host, port in refs:
        assert host in services and port in services[host], (host, port)


def test_deploy_ships_files_and_refuses_what_cannot_run_in_a_cluster(tmp_path):
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "example.zone").write_text(
        "$ORIGIN example.\n$TTL 300\n@ SOA ns1 admin 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 192.0.2.1\n")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 15s}\nalerting:\n  alertmanagers:\n    - static_configs:\n"
        "        - targets: [\"127.0.0.1:19093\"]\nscrape_configs:\n  - job_name: app\n"
        "    static_configs: [{targets: [\"127.0.0.1:19101\"]}]\n")
    ok = write_stack(tmp_path, """data_dir: state
services:
  dns: {role: dns, listen: ["127.0.0.1:15353"], zones: [{origin: example, file: zones/example.zone}]}
  metrics: {role: metrics, listen: ["127.0.0.1:19090"], prometheus: prometheus.yml}
  alerts: {role: alerts, listen: ["127.0.0.1:19093"]}
  app: {role: demo-app, listen: ["127.0.0.1:19101"], tracing: {endpoint: "http://127.0.0.1:14318"}}
  traces: {role: traces, listen: ["127.0.0.1:14318"]}
  web:
    role: edge
    listen: [{address: "127.0.0.1:18081"}]
    routes: [{path: /, backend: app, rate_limit: {rps: 10, burst: 10, key: ip}}]
    backends: {app: {servers: ["127.0.0.1:19101"], health: {http: {path: /healthz}}}}
  backup:
    role: backup
    listen: ["127.0.0.1:19095"]
    repository: {path: state/repo}
    password_file: state/password
""")
    out = tmp_path / "out"
    r = run_cairn(["deploy", "kubernetes", "-c", ok, "-o", str(out), "--image", "registry.example/cairn:1"])
    assert r.returncode == 0, r.stderr
    stack = yaml.safe_load((out / "stack.yaml").read_text())
    assert stack["services"]["dns"]["zones"][0]["file"] == "zones_example.zone"      # next to it in the ConfigMap
    assert stack["services"]["metrics"]["prometheus"] == "prometheus.yml"
    assert stack["services"]["app"]["tracing"]["endpoint"] == "http://traces:14318"
    assert stack["services"]["backup"]["repository"]["path"] == "/var/lib/cairn/repo"
    web = stack["services"]["web"]
    assert web["routes"][0]["rate_limit"]["key"] == "ip" and web["backends"]["app"]["health"]["http"]["path"] == "/healthz"
    assert web["backends"]["app"]["servers"] == ["app:19101"] and web["listen"] == [{"address": "0.0.0.0:18081"}]
    prom = yaml.safe_load((out / "prometheus.yml").read_text())
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alerts:19093"]
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["app:19101"]
    assert (out / "zones_example.zone").read_text().startswith("$ORIGIN example.")
    kust = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert sorted(kust["configMapGenerator"][0]["files"]) == ["prometheus.yml", "stack.yaml", "zones_example.zone"]
    assert "image: registry.example/cairn:1" in (out / "app.yaml").read_text()
    docs = render(str(out))
    assert validate(docs)["errors"] == []
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    (tmp_path / "cm").mkdir()
    for k, v in cm["data"].items():
        (tmp_path / "cm" / k).write_text(v)
    r = run_cairn(["check", "-c", str(tmp_path / "cm" / "stack.yaml")])
    assert r.returncode == 0, r.stderr

    bad = write_stack(tmp_path, """data_dir: state
services:
  edge:
    role: edge
    listen: [{address: "127.0.0.1:18080"}]
    routes: [{path: /, backend: b}]
    backends: {b: {servers: ["127.0.0.1:17777"]}}
  backup:
    role: backup
    listen: ["127.0.0.1:19095"]
    repository: {path: /mnt/backups/repo}
    password_file: state/password
""", name="bad.yaml")
    r = run_cairn(["deploy", "kubernetes", "-c", bad, "-o", str(tmp_path / "bad-out")])
    assert r.returncode == 2
    assert re.search(r"bad\.yaml:7:30: services\.edge\.backends\.b\.servers\[0\]: no service of this stack listens on "
                     r"127\.0\.0\.1:17777", r.stderr), r.stderr
    assert re.search(r"bad\.yaml:11:24: services\.backup\.repository\.path: /mnt/backups/repo is a path outside the "
                     r"data directory", r.stderr), r.stderr
    assert "cannot be deployed" in r.stderr
    assert not (tmp_path / "bad-out" / "stack.yaml").exists()


def test_edge_servers_by_name(start, tmp_path):
    """What the cluster's stack relies on: an edge reaches its servers by name
    (looked up when it starts), as a Kubernetes Service name."""
    app, lb, admin = free_port(), free_port(), free_port()
    stack = write_stack(tmp_path, f"""
services:
  app: {{role: demo-app, listen: ["127.0.0.1:{app}"]}}
  lb:
    role: edge
    listen: [{{address: "127.0.0.1:{lb}"}}]
    admin: "127.0.0.1:{admin}"
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: ["localhost:{app}"]}}}}
""")
    start(["up", "-c", stack])
    r = wait_for(lambda: requests.get(f"http://127.0.0.1:{lb}/api/hello", timeout=2), timeout=20, what="the edge")
    assert r.status_code == 200 and r.json()["instance"] == "app"
    m = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
    assert f'server="localhost:{app}"' in m
    # a name that does not resolve: the edge does not start, and says why
    bad = write_stack(tmp_path, f"""
services:
  lb:
    role: edge
    listen: [{{address: "127.0.0.1:{free_port()}"}}]
    routes: [{{path: /, backend: app}}]
    backends: {{app: {{servers: ["no-such-host.invalid:80"]}}}}
""", name="bad.yaml")
    assert run_cairn(["check", "-c", bad]).returncode == 0          # checking a file needs no DNS
    r = run_cairn(["run", "lb", "-c", bad], timeout=20)
    assert r.returncode != 0 and "no-such-host.invalid:80: the name does not resolve" in r.stderr


def test_the_node_agent_ships_pod_logs_with_their_service(start, tmp_path):
    """The log agent's configuration a cluster gets (CRI pod logs under
    /var/log/pods), run here on a directory laid out as the kubelet lays it out:
    lines reach the logs service with namespace, pod, container, service and stream,
    the CRI prefix gone and the CRI timestamp kept."""
    out = tmp_path / "base"
    assert run_cairn(["deploy", "kubernetes", "-o", str(out)]).returncode == 0
    agent = yaml.safe_load((out / "stack.yaml").read_text())["services"]["log-agent"]["promtail"]
    pods = tmp_path / "pods"
    logs, la = free_port(), free_port()
    agent["clients"][0]["url"] = f"http://127.0.0.1:{logs}/loki/api/v1/push"
    agent["positions"]["filename"] = str(tmp_path / "positions.yaml")
    sc = agent["scrape_configs"][0]["static_configs"][0]
    assert sc["labels"]["__path__"] == "/var/log/pods/*/*/*.log"
    sc["labels"]["__path__"] = f"{pods}/*/*/*.log"
    stack = write_stack(tmp_path, yaml.safe_dump({"data_dir": "data", "services": {
        "logs": {"role": "logs", "listen": [f"127.0.0.1:{logs}"]},
        "agent": {"role": "log-agent", "listen": [f"127.0.0.1:{la}"], "promtail": agent}}}))
    for d, lines in (("default_lb-5d8f7c9b6d-x2x9q_0b1c/edge", ["lb line one", "lb line two"]),
                     ("default_metrics-0_77aa/cairn", ["metrics line"]),
                     ("kube-system_log-agent-q8w2z_9f00/cairn", ["agent line"])):
        (pods / d).mkdir(parents=True)
        (pods / d / "0.log").write_text("".join(f"2026-12-03T06:00:0{i}.123456789Z stderr F {l}\n"
                                                for i, l in enumerate(lines)))
    start(["up", "-c", stack])

    def lines(q):
        r = requests.get(f"http://127.0.0.1:{logs}/loki/api/v1/query_range", timeout=5,
                         params={"query": q, "start": "1796271000000000000", "limit": 100})
        return r.status_code == 200 and r.json()["data"]["result"]
    got = wait_for(lambda: lines('{service="lb"}'), timeout=30, what="the lb pod's lines")
    s = got[0]["stream"]
    assert (s["namespace"], s["pod"], s["container"], s["service"], s["stream"]) == \
        ("default", "lb-5d8f7c9b6d-x2x9q", "edge", "lb", "stderr")
    assert sorted(v[1] for v in got[0]["values"]) == ["lb line one", "lb line two"]
    assert got[0]["values"][-1][0] == "1796277600123456789"        # the CRI time, not the read time
    assert wait_for(lambda: lines('{service="metrics", pod="metrics-0"}'), timeout=10, what="a StatefulSet pod")
    assert wait_for(lambda: lines('{service="log-agent", namespace="kube-system"}'), timeout=10, what="a DaemonSet pod")
