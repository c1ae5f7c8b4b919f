"""role registry: the OCI Distribution API with skopeo and with plain HTTP requests."""
import hashlib
import json
import os
import signal
import subprocess
import time

import requests

import ociimage
from conftest import free_port, pid_alive, wait_for, write_stack

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def start_registry(start, tmp_path, port=None, extra=""):
    """A registry with the defaults and the stack-file lines in extra (indented as keys of the service)."""
    port = port or free_port()
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  registry:
    role: registry
    listen: ["127.0.0.1:{port}"]
{extra}""")
    p = start(["run", "registry", "-c", stack])
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, what="registry ready")
    return p, url, stack


def skopeo(*args):
    r = subprocess.run(["skopeo"] + list(args), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_skopeo_push_inspect_pull_delete(start, tmp_path):
    p, url, _ = start_registry(start, tmp_path)
    host = url[len("http://"):]
    digest = ociimage.make(str(tmp_path / "img"), nlayers=3)
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/img:latest", f"docker://{host}/team/app:v1")
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{host}/team/app:v1"))
    assert info["Digest"] == digest and info["RepoTags"] == ["v1"] and len(info["Layers"]) == 3
    # a second tag of the same image, then a copy to another repository: blobs mounted, not sent again
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{host}/team/app:v1",
           f"docker://{host}/team/app:v2")
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{host}/team/app:v1",
           f"docker://{host}/other/app:latest")
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/other/app:latest", f"oci:{tmp_path}/back:latest")
    assert sorted(os.listdir(tmp_path / "back" / "blobs" / "sha256")) == \
        sorted(os.listdir(tmp_path / "img" / "blobs" / "sha256"))
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{host}/team/app"))
    assert tags["Tags"] == ["v1", "v2"]
    assert requests.get(url + "/v2/_catalog", timeout=5).json() == {"repositories": ["other/app", "team/app"]}
    skopeo("delete", "--tls-verify=false", f"docker://{host}/team/app:v1")
    r = requests.get(f"{url}/v2/team/app/manifests/v2", timeout=5)
    assert r.status_code == 404     # deleting by digest removes every tag of it
    assert requests.get(f"{url}/v2/other/app/manifests/latest", timeout=5).status_code == 200


def test_uploads_chunks_mounts_and_errors(start, tmp_path):
    p, url, _ = start_registry(start, tmp_path)
    assert requests.get(url + "/v2/", timeout=5).headers["Docker-Distribution-API-Version"] == "registry/2.0"
    blob = os.urandom(300000)
    d = sha(blob)
    # chunked: POST, two PATCHes with Content-Range, a GET to find where it stands, PUT ?digest
    r = requests.post(url + "/v2/a/b/blobs/uploads/", timeout=5)
    assert r.status_code == 202
    loc = r.headers["Location"]
    r = requests.patch(url + loc, data=blob[:100000], timeout=5,
                       headers={"Content-Range": "0-99999", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-99999"
    # a chunk that does not start where the upload ends: 416
    r = requests.patch(url + loc, data=b"x", timeout=5, headers={"Content-Range": "5-5"})
    assert r.status_code == 416
    status = requests.get(url + loc, timeout=5)
    assert status.status_code == 204 and status.headers["Range"] == "0-99999"
    r = requests.patch(url + loc, data=blob[100000:], timeout=5, headers={"Content-Range": "100000-299999"})
    assert r.status_code == 202
    r = requests.put(url + loc, params={"digest": "sha256:" + "0" * 64}, timeout=5)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    # the wrong digest consumed the upload: start again, monolithic this time
    r = requests.post(url + "/v2/a/b/blobs/uploads/", params={"digest": d}, data=blob, timeout=5)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == d
    r = requests.head(f"{url}/v2/a/b/blobs/{d}", timeout=5)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(blob)
    r = requests.get(f"{url}/v2/a/b/blobs/{d}", headers={"Range": "bytes=10-19"}, timeout=5)
    assert r.status_code == 206 and r.content == blob[10:20]
    assert requests.get(f"{url}/v2/a/b/blobs/{d}", timeout=5).content == blob
    # cross-repository mount
    r = requests.post(url + "/v2/c/d/blobs/uploads/", params={"mount": d, "from": "a/b"}, timeout=5)
    assert r.status_code == 201
    assert requests.head(f"{url}/v2/c/d/blobs/{d}", timeout=5).status_code == 200
    assert requests.head(f"{url}/v2/e/f/blobs/{d}", timeout=5).status_code == 404
    # manifests: every blob named must be there
    cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    r = requests.post(url + "/v2/a/b/blobs/uploads/", params={"digest": sha(cfg)}, data=cfg, timeout=5)
    assert r.status_code == 201
    man = {"schemaVersion": 2, "mediaType": MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg), "size": len(cfg)},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(blob)}]}
    bad = dict(man, layers=[{"mediaType": "x", "digest": "sha256:" + "1" * 64, "size": 1}])
    r = requests.put(url + "/v2/a/b/manifests/v1", data=json.dumps(bad), headers={"Content-Type": MANIFEST},
                     timeout=5)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    body = json.dumps(man).encode()
    r = requests.put(url + "/v2/a/b/manifests/v1", data=body, headers={"Content-Type": MANIFEST}, timeout=5)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == sha(body)
    g = requests.get(url + "/v2/a/b/manifests/v1", timeout=5)
    assert g.content == body and g.headers["Content-Type"] == MANIFEST
    # a signature-like artifact with a subject: OCI-Subject, then the referrers API
    sig = {"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": "application/vnd.example.sig",
           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(cfg), "size": len(cfg)},
           "layers": [], "subject": {"mediaType": MANIFEST, "digest": sha(body), "size": len(body)}}
    sb = json.dumps(sig).encode()
    r = requests.put(f"{url}/v2/a/b/manifests/{sha(sb)}", data=sb, headers={"Content-Type": MANIFEST}, timeout=5)
    assert r.status_code == 201 and r.headers["OCI-Subject"] == sha(body)
    ref = requests.get(f"{url}/v2/a/b/referrers/{sha(body)}", timeout=5).json()
    assert [m["digest"] for m in ref["manifests"]] == [sha(sb)]
    assert ref["manifests"][0]["artifactType"] == "application/vnd.example.sig"
    r = requests.get(f"{url}/v2/a/b/referrers/{sha(body)}", params={"artifactType": "other"}, timeout=5)
    assert r.json()["manifests"] == [] and r.headers["OCI-Filters-Applied"] == "artifactType"
    # tags, paginated with a Link header
    for t in ("v2", "v3", "v4"):
        assert requests.put(f"{url}/v2/a/b/manifests/{t}", data=body, headers={"Content-Type": MANIFEST},
                            timeout=5).status_code == 201
    r = requests.get(url + "/v2/a/b/tags/list", params={"n": 2}, timeout=5)
    assert r.json() == {"name": "a/b", "tags": ["v1", "v2"]} and 'rel="next"' in r.headers["Link"]
    r = requests.get(url + "/v2/a/b/tags/list", params={"n": 2, "last": "v2"}, timeout=5)
    assert r.json()["tags"] == ["v3", "v4"]
    assert requests.delete(url + "/v2/a/b/manifests/v4", timeout=5).status_code == 202
    assert requests.get(url + "/v2/a/b/tags/list", timeout=5).json()["tags"] == ["v1", "v2", "v3"]
    # a repository whose name holds the API's words
    r = requests.put(url + "/v2/a/blobs/manifests/tags/list/manifests/w1", data=body,
                     headers={"Content-Type": MANIFEST}, timeout=5)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert requests.post(url + "/v2/a/blobs/manifests/tags/list/blobs/uploads/",
                         params={"mount": d, "from": "a/b"}, timeout=5).status_code == 201
    assert requests.post(url + "/v2/a/blobs/manifests/tags/list/blobs/uploads/",
                         params={"mount": sha(cfg), "from": "a/b"}, timeout=5).status_code == 201
    r = requests.put(url + "/v2/a/blobs/manifests/tags/list/manifests/w1", data=body,
                     headers={"Content-Type": MANIFEST}, timeout=5)
    assert r.status_code == 201
    assert requests.get(url + "/v2/a/blobs/manifests/tags/list/tags/list", timeout=5).json() == {
        "name": "a/blobs/manifests/tags/list", "tags": ["w1"]}
    # errors
    assert requests.get(url + "/v2/nope/manifests/latest", timeout=5).json()["errors"][0]["code"] == \
        "MANIFEST_UNKNOWN"
    assert requests.get(url + "/v2/Bad_Name/tags/list", timeout=5).json()["errors"][0]["code"] == "NAME_INVALID"
    assert requests.get(url + "/v2/nope/tags/list", timeout=5).status_code == 404


def test_pushed_images_survive_kill_9(start, tmp_path):
    port = free_port()
    p, url, stack = start_registry(start, tmp_path, port)
    host = url[len("http://"):]
    digest = ociimage.make(str(tmp_path / "img"), nlayers=2)
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/img:latest", f"docker://{host}/keep/me:1")
    os.kill(p.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(p.pid), timeout=5, what="the process to die")
    start(["run", "registry", "-c", stack], name="again")
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, what="registry again")
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{host}/keep/me:1"))
    assert info["Digest"] == digest
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/keep/me:1", f"oci:{tmp_path}/back:latest")
    assert sorted(os.listdir(tmp_path / "back" / "blobs" / "sha256")) == \
        sorted(os.listdir(tmp_path / "img" / "blobs" / "sha256"))


def test_upload_resumes_after_a_cut_connection(start, tmp_path):
    import socket
    p, url, _ = start_registry(start, tmp_path)
    port = int(url.rsplit(":", 1)[1])
    blob = os.urandom(500000)
    loc = requests.post(url + "/v2/cut/app/blobs/uploads/", timeout=5).headers["Location"]
    # a PATCH that announces the whole blob but stops after 200,000 bytes
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(blob)}\r\n"
              f"Content-Type: application/octet-stream\r\n\r\n".encode() + blob[:200000])

    def received():
        r = requests.get(url + loc, timeout=5)
        return r.status_code == 204 and r.headers["Range"] == "0-199999"
    wait_for(received, timeout=10, what="the first 200,000 bytes to be in the upload")
    s.close()
    # the client asks where it stands and sends the rest
    have = int(requests.get(url + loc, timeout=5).headers["Range"].split("-")[1]) + 1
    r = requests.patch(url + loc, data=blob[have:], headers={"Content-Range": f"{have}-{len(blob) - 1}"},
                       timeout=5)
    assert r.status_code == 202
    d = sha(blob)
    assert requests.put(url + loc, params={"digest": d}, timeout=5).status_code == 201
    assert requests.get(f"{url}/v2/cut/app/blobs/{d}", timeout=5).content == blob


def test_token_auth_users_grants_and_public_pull(start, tmp_path):
    port = free_port()
    (tmp_path / "ci.pw").write_text("s3cret\n")
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  registry:
    role: registry
    listen: ["127.0.0.1:{port}"]
    users:
      - {{name: ci, password_file: ci.pw, grants: [{{repositories: "team/*", actions: [pull, push, delete]}},
                                                  {{repositories: "library/*", actions: [pull, push]}}]}}
      - {{name: viewer, password: look, grants: [{{repositories: "team/*", actions: [pull]}}]}}
    public: ["library/*"]
""")
    start(["run", "registry", "-c", stack])
    url = f"http://127.0.0.1:{port}"
    host = f"127.0.0.1:{port}"
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, what="registry ready")
    # the challenge
    r = requests.get(url + "/v2/", timeout=5)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith(f'Bearer realm="http://{host}/token",service="cairn-registry"')
    r = requests.get(url + "/v2/team/app/tags/list", timeout=5)
    assert 'scope="repository:team/app:pull"' in r.headers["WWW-Authenticate"]
    assert requests.get(url + "/token", auth=("ci", "wrong"), timeout=5).status_code == 401
    # tokens carry only what the user may do of what was asked
    tok = requests.get(url + "/token", params={"service": "cairn-registry", "scope": "repository:team/app:pull,push"},
                       auth=("viewer", "look"), timeout=5).json()["token"]
    h = {"Authorization": "Bearer " + tok}
    assert requests.get(url + "/v2/", headers=h, timeout=5).status_code == 200
    r = requests.post(url + "/v2/team/app/blobs/uploads/", headers=h, timeout=5)
    assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert requests.get(url + "/v2/", headers={"Authorization": "Bearer " + tok[:-2] + "xx"},
                        timeout=5).status_code == 401
    # skopeo: push with credentials, anonymous pull of a public repository only
    ociimage.make(str(tmp_path / "img"), nlayers=1)
    r = subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{tmp_path}/img:latest",
                        f"docker://{host}/team/app:v1"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0       # no credentials
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "ci:s3cret", f"oci:{tmp_path}/img:latest",
           f"docker://{host}/team/app:v1")
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "ci:s3cret", f"oci:{tmp_path}/img:latest",
           f"docker://{host}/library/base:1")
    skopeo("inspect", "--tls-verify=false", f"docker://{host}/library/base:1")
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{host}/team/app:v1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0       # not public
    skopeo("inspect", "--tls-verify=false", "--creds", "viewer:look", f"docker://{host}/team/app:v1")
    r = subprocess.run(["skopeo", "delete", "--tls-verify=false", "--creds", "viewer:look",
                        f"docker://{host}/team/app:v1"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0       # viewer may not delete
    skopeo("delete", "--tls-verify=false", "--creds", "ci:s3cret", f"docker://{host}/team/app:v1")


def test_big_blob_to_a_client_that_closes_reads_whole(start, tmp_path):
    """skopeo sends "Connection: close": the last bytes of a big blob must still go out
    before the server closes (they were cut when the response ended while the socket
    was full)."""
    import socket
    p, url, _ = start_registry(start, tmp_path)
    port = int(url.rsplit(":", 1)[1])
    blob = os.urandom(20 << 20)
    d = sha(blob)
    r = requests.post(f"{url}/v2/big/one/blobs/uploads/", params={"digest": d}, data=blob, timeout=30)
    assert r.status_code == 201
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(f"GET /v2/big/one/blobs/{d} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        got = bytearray()
        n = 0
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            got += chunk
            n += 1
            if n % 64 == 0:
                time.sleep(0.002)      # a reader slower than the disk now and then
        s.close()
        head, _, body = bytes(got).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and len(body) == len(blob) and sha(body) == d
