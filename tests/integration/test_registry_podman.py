"""role registry with podman: login, push and pull through the token scheme, in a
throw-away podman configuration (storage, registries and auth files under the test's
directory; the vfs driver, since nothing runs a container here)."""
import json
import os
import subprocess

import requests

import ociimage
from conftest import free_port, wait_for, write_stack


def podman_env(tmp_path, host):
    root = tmp_path / "podman"
    root.mkdir()
    (root / "storage.conf").write_text(f"""[storage]
driver = "vfs"
graphroot = "{root}/graph"
runroot = "{root}/run"
""")
    (root / "containers.conf").write_text("""[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
""")
    (root / "registries.conf").write_text(f"""unqualified-search-registries = []
[[registry]]
location = "{host}"
insecure = true
""")
    env = dict(os.environ)
    env.update(CONTAINERS_STORAGE_CONF=str(root / "storage.conf"), CONTAINERS_CONF=str(root / "containers.conf"),
               CONTAINERS_REGISTRIES_CONF=str(root / "registries.conf"), REGISTRY_AUTH_FILE=str(root / "auth.json"))
    (root / "auth.json").write_text('{"auths": {}}')
    return env


def podman(env, *args, ok=True):
    r = subprocess.run(["podman"] + list(args), capture_output=True, text=True, timeout=180, env=env)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_podman_login_push_pull(start, tmp_path):
    port = free_port()
    host = f"127.0.0.1:{port}"
    (tmp_path / "pw").write_text("s3cret\n")
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  registry:
    role: registry
    listen: ["{host}"]
    users: [{{name: ci, password_file: pw, grants: [{{repositories: "team/*", actions: [pull, push, delete]}}]}}]
""")
    start(["run", "registry", "-c", stack])
    wait_for(lambda: requests.get(f"http://{host}/-/ready", timeout=1).status_code == 200, what="registry ready")
    env = podman_env(tmp_path, host)
    ociimage.make(str(tmp_path / "img"), nlayers=2)
    podman(env, "pull", "-q", f"oci:{tmp_path}/img:latest")
    image_id = podman(env, "images", "-q").stdout.split()[0]
    podman(env, "tag", image_id, f"{host}/team/app:v1")
    # without credentials: refused
    r = podman(env, "push", "-q", f"{host}/team/app:v1", ok=False)
    assert r.returncode != 0 and ("unauthorized" in r.stderr.lower() or "denied" in r.stderr), r.stderr

    def login(password):
        return subprocess.run(["podman", "login", "-u", "ci", "--password-stdin", host], input=password + "\n",
                              capture_output=True, text=True, timeout=60, env=env)
    assert login("wrong").returncode != 0
    p = login("s3cret")
    assert p.returncode == 0 and "Login Succeeded" in p.stdout, p.stderr
    podman(env, "push", "-q", f"{host}/team/app:v1")
    # pull it back into an emptied store
    podman(env, "rmi", "-a", "-f")
    podman(env, "pull", "-q", f"{host}/team/app:v1")
    info = json.loads(podman(env, "image", "inspect", f"{host}/team/app:v1").stdout)[0]
    assert info["Id"].startswith(image_id) and len(info["RootFS"]["Layers"]) == 2
    assert info["RepoDigests"] and info["RepoDigests"][0].startswith(f"{host}/team/app@sha256:")
    podman(env, "logout", host)
    r = podman(env, "pull", "-q", f"{host}/team/app:v1", ok=False)
    assert r.returncode != 0 and ("unauthorized" in r.stderr.lower() or "denied" in r.stderr), r.stderr
