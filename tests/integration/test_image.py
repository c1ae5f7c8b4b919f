"""make image: cairn's OCI image layout - reproducible, read by skopeo, pushed to the
registry role, and run by podman (runc) with a service reached through a published
port."""
import json
import os
import subprocess

import requests

from conftest import CAIRN, ROOT, free_port, wait_for
from test_registry import skopeo, start_registry


def make_image(env=None):
    r = subprocess.run(["make", "-s", "image"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=env or dict(os.environ))
    assert r.returncode == 0, r.stderr
    with open(os.path.join(ROOT, "build", "image", "index.json")) as f:
        return json.load(f)["manifests"][0]


def version():
    return subprocess.run([CAIRN, "version"], capture_output=True, text=True).stdout.split()[1]


def test_image_is_reproducible_and_pushes(start, tmp_path):
    first = make_image()
    again = make_image()
    assert first["digest"] == again["digest"]       # same inputs, same digest
    tag = version()
    assert first["annotations"]["org.opencontainers.image.ref.name"] == tag
    layout = os.path.join(ROOT, "build", "image")
    info = json.loads(skopeo("inspect", f"oci:{layout}:{tag}"))
    assert info["Digest"] == first["digest"] and info["Os"] == "linux" and info["Architecture"] == "amd64"
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert info["Labels"]["org.opencontainers.image.revision"] == rev
    assert info["Labels"]["org.opencontainers.image.version"] == tag
    # one layer: the binary, the libraries ldd names, the loader, CA certificates, passwd
    cfg = json.loads(skopeo("inspect", "--config", f"oci:{layout}:{tag}"))
    assert cfg["config"]["User"] == "10001:10001" and cfg["config"]["Entrypoint"] == ["/usr/local/bin/cairn"]
    names = subprocess.run(["tar", "-tzf", os.path.join(layout, "blobs", "sha256", info["Layers"][0][7:])],
                           capture_output=True, text=True, check=True).stdout.split()
    libs = [n for n in names if ".so" in n]
    assert "usr/local/bin/cairn" in names and "etc/ssl/certs/ca-certificates.crt" in names
    assert "etc/passwd" in names and "lib64/ld-linux-x86-64.so.2" in libs
    assert any(n.endswith("libssl.so.3") for n in libs) and not [n for n in names if n.startswith(("bin/", "sbin/"))]
    # to the registry role with skopeo, and back
    _, url, _ = start_registry(start, tmp_path)
    host = url[len("http://"):]
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:{tag}", f"docker://{host}/cairn:{tag}")
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{host}/cairn:{tag}"))["Digest"] == \
        first["digest"]


def test_podman_runs_the_image(tmp_path):
    """podman with runc (crun refuses these VMs' hybrid cgroups), cgroupfs, explicit
    ulimits and the overlay driver, all in a throw-away configuration."""
    manifest = make_image()
    tag = version()
    root = tmp_path / "podman"
    root.mkdir()
    (root / "storage.conf").write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/graph"\n'
                                       f'runroot = "{root}/run"\n')
    nofile = min(65536, int(subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout))
    (root / "containers.conf").write_text(f"""[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "runc"
""")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "stack.yaml").write_text('services:\n  app: {role: demo-app, listen: ["0.0.0.0:8000"]}\n')
    env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(root / "storage.conf"),
               CONTAINERS_CONF=str(root / "containers.conf"))
    port = free_port()
    layout = os.path.join(ROOT, "build", "image")
    r = subprocess.run(["podman", "run", "-d", "-p", f"127.0.0.1:{port}:8000", "-v", f"{conf}:/conf:ro",
                        f"oci:{layout}:{tag}", "run", "app", "-c", "/conf/stack.yaml"],
                       capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip().splitlines()[-1]
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200,
                 timeout=30, what="the container's service ready through the published port")
        info = json.loads(subprocess.run(["podman", "inspect", cid], capture_output=True, text=True, env=env,
                                         check=True).stdout)[0]
        assert info["Config"]["User"] == "10001:10001"
        with open(os.path.join(layout, "blobs", "sha256", manifest["digest"][7:])) as f:
            config_digest = json.load(f)["config"]["digest"]
        assert info["Image"] == config_digest[7:]        # the container runs this image
        logs = subprocess.run(["podman", "logs", cid], capture_output=True, text=True, env=env).stderr
        assert "demo-app serving" in logs
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", cid], capture_output=True, env=env, timeout=60)
        subprocess.run(["podman", "rmi", "-a", "-f"], capture_output=True, env=env, timeout=60)
