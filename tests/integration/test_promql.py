"""PromQL conformance: every test file in tests/promql/ (Prometheus's test-file
format) runs against Debian's Prometheus 2.42, which proves the expectations, and
against cairn, which must give the same answers. Then the query API's shapes and
errors, compared with Prometheus on the same data."""
import glob
import os
import shutil
import subprocess

import pytest
import requests

from conftest import ROOT, free_port, wait_for, write_stack
from promql_tests import run_file
from promwrite import push_url

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
FILES = sorted(glob.glob(os.path.join(ROOT, "tests", "promql", "*.test")))


class Server:
    """A fresh Prometheus or cairn metrics server; reset() replaces it with an empty one."""

    def __init__(self, kind, tmp_path, start):
        self.kind, self.tmp, self.start_fn = kind, tmp_path, start
        self.n = 0
        self.proc = None
        self.url = None

    def reset(self):
        self.stop()
        self.n += 1
        port = free_port()
        d = self.tmp / f"{self.kind}{self.n}"
        d.mkdir()
        if self.kind == "prometheus":
            (d / "prometheus.yml").write_text("global: {}\n")
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/data",
                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"],
                stdout=subprocess.DEVNULL, stderr=open(d / "log", "wb"))
            popen = self.proc
        else:
            stack = write_stack(d, f"""
data_dir: data
services:
  metrics:
    role: metrics
    listen: ["127.0.0.1:{port}"]
    retention: 100000d
    prometheus:
      global: {{ evaluation_interval: 1m }}
      scrape_configs: []
""")
            self.proc = self.start_fn(["run", "metrics", "-c", stack], name=f"metrics{self.n}")
            popen = self.proc.p
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: popen.poll() is not None or requests.get(self.url + "/-/ready", timeout=1).ok,
                 timeout=20, what=f"{self.kind} ready")
        assert popen.poll() is None, f"{self.kind} exited"
        return self.url

    def stop(self):
        if self.proc is None:
            return
        if self.kind == "prometheus":
            self.proc.terminate()
            self.proc.wait(20)
        else:
            self.proc.cleanup()
        self.proc = None


@pytest.fixture(params=["prometheus", "cairn"])
def server(request, tmp_path, start):
    if request.param == "prometheus" and not os.path.exists(PROMETHEUS):
        pytest.fail("prometheus is not installed (scripts/deps.sh installs it)")
    s = Server(request.param, tmp_path, start)
    s.reset()
    yield s
    s.stop()


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_promql_file(server, path):
    passed, failures = run_file(server.url, path, reset=server.reset)
    assert not failures, f"{server.kind}: {len(failures)} failed, {passed} passed\n" + "\n".join(failures)
    assert passed > 0
