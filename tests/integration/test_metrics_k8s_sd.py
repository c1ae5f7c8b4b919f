"""kubernetes_sd_configs in the metrics role. No cluster runs on these machines,
so the API server here is a small HTTPS server speaking the Kubernetes list API
(GET /api/v1/[namespaces/NS/]pods|services|endpoints, /api/v1/nodes; bearer token
required) with objects shaped as the API returns them; the target it points at is a
real demo-app process, scraped for real."""
import json
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from conftest import free_port, make_cert, wait_for, write_stack

TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-token"


class FakeAPI:
    def __init__(self, tmp_path):
        self.objects = {"pods": [], "services": [], "endpoints": [], "nodes": []}
        self.requests = []
        self.status = 200
        cert, key = make_cert(tmp_path, "localhost")
        self.cert = cert
        api = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                api.requests.append((self.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}" or api.status != 200:
                    code = 401 if api.status == 200 else api.status
                    body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}).encode()
                    self.send_response(code)
                else:
                    path = self.path.split("?")[0]
                    parts = path.strip("/").split("/")       # api v1 [namespaces NS] KIND
                    kind, ns = parts[-1], parts[3] if len(parts) == 5 else None
                    items = [o for o in api.objects.get(kind, [])
                             if ns is None or o["metadata"].get("namespace") == ns]
                    if "labelSelector=" in self.path:
                        sel = requests.utils.unquote(self.path.split("labelSelector=")[1].split("&")[0])
                        k, v = sel.split("=")
                        items = [o for o in items if o["metadata"].get("labels", {}).get(k) == v]
                    lk = {"pods": "PodList", "services": "ServiceList", "endpoints": "EndpointsList",
                          "nodes": "NodeList"}[kind]
                    body = json.dumps({"kind": lk, "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                                       "items": items}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def pod(name, ip, port, labels, annotations, ready=True, ns="default"):
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels,
                         "annotations": annotations,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-rs",
                                              "uid": "x", "controller": True}]},
            "spec": {"nodeName": "node-a",
                     "containers": [{"name": "app", "image": "cairn:0.1.0",
                                     "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}]},
                                    {"name": "sidecar", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": ip, "hostIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_kubernetes_sd_pods_services_endpoints_nodes(start, tmp_path):
    api = FakeAPI(tmp_path)
    try:
        app, mp = free_port(), free_port()
        (tmp_path / "token").write_text(TOKEN + "\n")
        api.objects["pods"] = [
            pod("web-1", "127.0.0.1", app, {"app": "web", "tier.kind/role": "front"},
                {"prometheus.io/scrape": "true", "prometheus.io/port": str(app)}),
            pod("quiet-1", "127.0.0.9", 9999, {"app": "quiet"}, {}),
            pod("elsewhere", "127.0.0.8", 9998, {"app": "web"}, {"prometheus.io/scrape": "true"}, ns="other"),
        ]
        api.objects["services"] = [{"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                                    "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                                             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}]
        api.objects["endpoints"] = [{"metadata": {"name": "web", "namespace": "default"},
                                     "subsets": [{"addresses": [{"ip": "127.0.0.1", "nodeName": "node-a",
                                                                 "targetRef": {"kind": "Pod", "name": "web-1",
                                                                               "namespace": "default"}}],
                                                  "notReadyAddresses": [{"ip": "127.0.0.7"}],
                                                  "ports": [{"name": "http", "port": app, "protocol": "TCP"}]}]}]
        api.objects["nodes"] = [{"metadata": {"name": "node-a", "labels": {"kubernetes.io/os": "linux"}},
                                 "spec": {"providerID": "kind://node-a"},
                                 "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                                          {"type": "Hostname", "address": "node-a"}],
                                            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}]
        sd = (f'{{api_server: "https://localhost:{api.port}", tls_config: {{ca_file: {api.cert}}}, '
              f'bearer_token_file: token')
        stack = write_stack(tmp_path, f"""
services:
  app: {{role: demo-app, listen: ["127.0.0.1:{app}"]}}
  metrics:
    role: metrics
    listen: ["127.0.0.1:{mp}"]
    prometheus:
      global: {{scrape_interval: 1s}}
      scrape_configs:
        - job_name: kubernetes-pods
          kubernetes_sd_configs:
            - {sd}, role: pod, namespaces: {{names: [default]}}}}
          relabel_configs:
            - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}}
            - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
              action: replace
              regex: '([^:]+)(?::\\d+)?;(\\d+)'
              replacement: '$1:$2'
              target_label: __address__
            - {{action: labelmap, regex: __meta_kubernetes_pod_label_(.+)}}
            - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
            - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
        - job_name: kubernetes-services
          kubernetes_sd_configs: [{sd}, role: service, selectors: [{{role: service, label: "app=web"}}]}}]
          relabel_configs: [{{action: drop, regex: ".*", source_labels: [__address__]}}]
        - job_name: kubernetes-endpoints
          kubernetes_sd_configs: [{sd}, role: endpoints}}]
        - job_name: kubernetes-nodes
          kubernetes_sd_configs: [{sd}, role: node}}]
          relabel_configs: [{{action: drop, regex: ".*", source_labels: [__address__]}}]
""")
        start(["up", "-c", stack])
        base = f"http://127.0.0.1:{mp}"
        q = lambda e: requests.get(base + "/api/v1/query", params={"query": e}, timeout=5).json()["data"]["result"]
        up = wait_for(lambda: q('up{job="kubernetes-pods"} == 1'), timeout=30, what="the pod scraped")
        assert len(up) == 1
        m = up[0]["metric"]
        assert m["pod"] == "web-1" and m["namespace"] == "default" and m["app"] == "web" and \
            m["tier_kind_role"] == "front" and m["instance"] == f"127.0.0.1:{app}"
        assert q(f'demo_http_requests_total{{job="kubernetes-pods", pod="web-1"}}') is not None
        # what the API server was asked, with the service account's token
        paths = {p.split("?")[0] for p, _ in api.requests}
        assert {"/api/v1/namespaces/default/pods", "/api/v1/services", "/api/v1/endpoints", "/api/v1/pods",
                "/api/v1/nodes"} <= paths
        assert all(auth == f"Bearer {TOKEN}" for _, auth in api.requests)
        assert any("labelSelector=app%3Dweb" in p for p, _ in api.requests)
        t = requests.get(base + "/api/v1/targets", timeout=5).json()["data"]
        active = [x for x in t["activeTargets"] if x["labels"]["job"] == "kubernetes-pods"]
        d = active[0]["discoveredLabels"]
        assert d["__meta_kubernetes_pod_container_port_name"] == "http" and \
            d["__meta_kubernetes_pod_container_name"] == "app" and d["__meta_kubernetes_pod_ready"] == "true" and \
            d["__meta_kubernetes_pod_controller_kind"] == "ReplicaSet" and \
            d["__meta_kubernetes_pod_labelpresent_app"] == "true" and d["__meta_kubernetes_pod_node_name"] == "node-a"
        dropped = [x["discoveredLabels"] for x in t["droppedTargets"]]
        svc = [x for x in dropped if x.get("__meta_kubernetes_service_name") == "web"]
        assert svc and svc[0]["__address__"] == "web.default.svc:80" and \
            svc[0]["__meta_kubernetes_service_cluster_ip"] == "10.96.0.10" and \
            svc[0]["__meta_kubernetes_service_port_name"] == "http"
        nodes = [x for x in dropped if x.get("__meta_kubernetes_node_name") == "node-a"]
        assert nodes and nodes[0]["__address__"] == "10.0.0.1:10250" and \
            nodes[0]["__meta_kubernetes_node_address_Hostname"] == "node-a" and \
            nodes[0]["__meta_kubernetes_node_label_kubernetes_io_os"] == "linux"
        eps = {x["discoveredLabels"]["__address__"]: x["discoveredLabels"] for x in t["activeTargets"]
               if x["labels"]["job"] == "kubernetes-endpoints"}
        assert eps[f"127.0.0.1:{app}"]["__meta_kubernetes_endpoint_ready"] == "true"
        assert eps[f"127.0.0.1:{app}"]["__meta_kubernetes_pod_label_app"] == "web"
        assert eps[f"127.0.0.1:{app}"]["__meta_kubernetes_service_label_app"] == "web"
        assert eps[f"127.0.0.7:{app}"]["__meta_kubernetes_endpoint_ready"] == "false"
        # the API server refuses (a revoked token, say): the targets stay
        api.status = 403
        failures = lambda: float(re.search(r"^prometheus_sd_kubernetes_failures_total (\S+)$",
                                           requests.get(base + "/metrics", timeout=5).text, re.M).group(1))
        assert failures() == 0
        wait_for(lambda: failures() > 0, timeout=30, what="a failed listing counted")
        assert len(q('up{job="kubernetes-pods"}')) == 1
        # the pod goes away: its target too
        api.status = 200
        api.objects["pods"] = [p for p in api.objects["pods"] if p["metadata"]["name"] != "web-1"]
        wait_for(lambda: not [x for x in requests.get(base + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
                              if x["labels"]["job"] == "kubernetes-pods"], timeout=30, what="the target gone")
    finally:
        api.stop()
