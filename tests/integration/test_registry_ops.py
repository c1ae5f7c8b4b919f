"""role registry beyond pull and push: online garbage collection (also under concurrent
pushes), quotas, webhook notifications, Accept negotiation and TLS."""
import http.server
import json
import os
import random
import re
import threading
import time

import requests

import ociimage
from conftest import free_port, make_cert, wait_for, write_stack
from test_registry import sha, skopeo, start_registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def metric(url, name):
    """The first sample of name (a metric name, or a name with its whole label set)."""
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or ("{" not in name and line.startswith(name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def push_blob(url, repo, data):
    d = sha(data)
    r = requests.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": d}, data=data, timeout=10)
    return d, r


def push_manifest(url, repo, ref, blobs, media_type=OCI_MANIFEST, config_type="application/vnd.oci.image.config.v1+json"):
    """blobs: [(digest, size)], the first is the config."""
    m = json.dumps({"schemaVersion": 2, "mediaType": media_type,
                    "config": {"mediaType": config_type, "digest": blobs[0][0], "size": blobs[0][1]},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}
                               for d, n in blobs[1:]]}).encode()
    r = requests.put(f"{url}/v2/{repo}/manifests/{ref}", data=m, headers={"Content-Type": media_type}, timeout=10)
    return sha(m), r


def blob_files(root):
    out = set()
    for dirpath, _, files in os.walk(root / "data" / "registry" / "blobs"):
        out.update(f for f in files if "." not in f)
    return out


def test_gc_removes_what_nothing_references_and_keeps_images(start, tmp_path):
    p, url, _ = start_registry(start, tmp_path, extra="    gc: {interval: 1s, grace: 2s, uploads: 3s}\n")
    host = url[len("http://"):]
    keep = ociimage.make(str(tmp_path / "keep"), nlayers=2)
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/keep:latest", f"docker://{host}/team/keep:v1")
    ociimage.make(str(tmp_path / "drop"), nlayers=2)
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/drop:latest", f"docker://{host}/team/drop:v1")
    drop = requests.head(f"{url}/v2/team/drop/manifests/v1", timeout=5,
                         headers={"Accept": OCI_MANIFEST}).headers["Docker-Content-Digest"]
    lone, r = push_blob(url, "team/lone", os.urandom(5000))
    assert r.status_code == 201
    loc = requests.post(f"{url}/v2/team/lone/blobs/uploads/", timeout=5).headers["Location"]
    requests.patch(url + loc, data=b"half an upload", timeout=5)
    keep_files = set(os.listdir(tmp_path / "keep" / "blobs" / "sha256"))
    drop_only = set(os.listdir(tmp_path / "drop" / "blobs" / "sha256")) - keep_files
    assert keep_files | drop_only | {lone[7:]} <= blob_files(tmp_path)
    assert requests.delete(f"{url}/v2/team/drop/manifests/{drop}", timeout=5).status_code == 202

    def collected():
        have = blob_files(tmp_path)
        return not (have & (drop_only | {lone[7:]})) and \
            not os.listdir(tmp_path / "data" / "registry" / "uploads")
    wait_for(collected, timeout=30, what="the dropped image, the lone blob and the stale upload to be collected")
    assert keep_files <= blob_files(tmp_path)
    assert metric(url, "cairn_registry_gc_blobs_deleted_total") >= len(drop_only) + 1
    assert metric(url, "cairn_registry_gc_uploads_deleted_total") == 1
    assert requests.get(url + loc, timeout=5).status_code == 404
    assert requests.get(f"{url}/v2/team/lone/blobs/{lone}", timeout=5).status_code == 404
    # the kept image pulls whole
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/team/keep:v1", f"oci:{tmp_path}/back:latest")
    assert sorted(os.listdir(tmp_path / "back" / "blobs" / "sha256")) == sorted(keep_files)
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{host}/team/keep:v1"))["Digest"] == keep


def test_gc_under_concurrent_pushes_never_loses_a_referenced_blob(start, tmp_path):
    """Pushers upload blobs, wait (sometimes past the grace), look their blobs up by HEAD as
    clients do, and push a manifest, while collection runs every second with a one-second
    grace. Every manifest the registry accepted must pull whole afterwards."""
    p, url, _ = start_registry(start, tmp_path, extra="    gc: {interval: 1s, grace: 1s}\n")
    accepted, refused, errors = [], [], []
    stop = time.monotonic() + 12

    def pusher(n):
        rnd = random.Random(n)
        i = 0
        while time.monotonic() < stop:
            repo = f"load/p{n}"
            blobs = []
            for _ in range(3):
                data = os.urandom(rnd.randint(1000, 50000))
                d, r = push_blob(url, repo, data)
                if r.status_code != 201:
                    errors.append(("blob", r.status_code, r.text))
                    return
                blobs.append((d, len(data)))
            time.sleep(rnd.choice([0, 0.3, 1.5, 2.5]))
            # a client that finds its blobs gone uploads them again
            for d, size in blobs:
                if requests.head(f"{url}/v2/{repo}/blobs/{d}", timeout=5).status_code != 200:
                    refused.append(d)
            md, r = push_manifest(url, repo, f"t{i}", blobs)
            if r.status_code == 201:
                accepted.append((repo, md, blobs))
            elif r.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in r.text:
                refused.append(md)
            else:
                errors.append(("manifest", r.status_code, r.text))
            i += 1

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert accepted
    runs = metric(url, "cairn_registry_gc_runs_total")
    wait_for(lambda: metric(url, "cairn_registry_gc_runs_total") >= runs + 3, timeout=20,
             what="three more collections")
    assert metric(url, "cairn_registry_gc_blobs_deleted_total") > 0 or not refused
    for repo, md, blobs in accepted:
        r = requests.get(f"{url}/v2/{repo}/manifests/{md}", headers={"Accept": OCI_MANIFEST}, timeout=5)
        assert r.status_code == 200
        for d, size in blobs:
            b = requests.get(f"{url}/v2/{repo}/blobs/{d}", timeout=5)
            assert b.status_code == 200 and sha(b.content) == d, (repo, md, d)


def test_quotas_per_repository_prefix(start, tmp_path):
    p, url, _ = start_registry(start, tmp_path, extra="    quotas: [{repositories: \"team/*\", bytes: 1MiB}]\n")
    a = os.urandom(600 * 1024)
    d, r = push_blob(url, "team/a", a)
    assert r.status_code == 201
    # another 600 KiB under team/: over the quota, monolithic and chunked
    _, r = push_blob(url, "team/b", os.urandom(600 * 1024))
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    assert "team/*" in r.json()["errors"][0]["message"]
    loc = requests.post(f"{url}/v2/team/b/blobs/uploads/", timeout=5).headers["Location"]
    assert requests.patch(url + loc, data=os.urandom(300 * 1024), timeout=5).status_code == 202
    r = requests.patch(url + loc, data=os.urandom(300 * 1024), timeout=5)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    # the same blob again under team/ costs nothing: pushed or mounted
    assert push_blob(url, "team/c", a)[1].status_code == 201
    r = requests.post(f"{url}/v2/team/d/blobs/uploads/", params={"mount": d, "from": "team/a"}, timeout=5)
    assert r.status_code == 201
    # outside the prefix: no quota
    assert push_blob(url, "other/x", os.urandom(900 * 1024))[1].status_code == 201


class Receiver(http.server.BaseHTTPRequestHandler):
    events, headers, fail_first = [], [], 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        cls.headers.append(dict(self.headers))
        cls.events.extend(json.loads(body)["events"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_webhooks_on_push_pull_and_delete_with_retries(start, tmp_path):
    Receiver.events, Receiver.headers, Receiver.fail_first = [], [], 2
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        extra = f"""    notifications:
      endpoints:
        - name: hook
          url: http://127.0.0.1:{srv.server_address[1]}/events
          headers: {{Authorization: [Bearer s3cret]}}
          ignore: {{actions: [mount]}}
"""
        p, url, _ = start_registry(start, tmp_path, extra=extra)
        host = url[len("http://"):]
        digest = ociimage.make(str(tmp_path / "img"), nlayers=2)
        skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/img:latest", f"docker://{host}/team/app:v1")
        r = requests.get(f"{url}/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST}, timeout=5)
        assert r.status_code == 200
        assert requests.delete(f"{url}/v2/team/app/manifests/{digest}", timeout=5).status_code == 202

        def got(action, media):
            return [e for e in Receiver.events if e["action"] == action and e["target"]["mediaType"] == media]
        wait_for(lambda: got("delete", OCI_MANIFEST), timeout=20, what="the delete event")
        pushed = got("push", OCI_MANIFEST)
        assert len(pushed) == 1
        t = pushed[0]["target"]
        assert t["digest"] == digest and t["repository"] == "team/app" and t["tag"] == "v1"
        assert t["url"] == f"{url}/v2/team/app/manifests/{digest}" and t["size"] == t["length"] > 0
        assert pushed[0]["request"]["method"] == "PUT" and "skopeo" in pushed[0]["request"]["useragent"]
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", pushed[0]["timestamp"])
        assert pushed[0]["source"]["addr"] == host and pushed[0]["source"]["instanceID"]
        blob_pushes = got("push", "application/octet-stream")
        assert len(blob_pushes) == 3        # two layers and the config
        pulled = got("pull", OCI_MANIFEST)
        assert len(pulled) == 1 and pulled[0]["target"]["tag"] == "v1"
        assert got("delete", OCI_MANIFEST)[0]["target"]["digest"] == digest
        assert len({e["id"] for e in Receiver.events}) == len(Receiver.events)
        assert all(h["Authorization"] == "Bearer s3cret" and
                   h["Content-Type"] == "application/vnd.docker.distribution.events.v1+json"
                   for h in Receiver.headers)
        # the first two POSTs were refused with 503: retried (with the default threshold
        # and backoff), nothing lost
        assert metric(url, "cairn_registry_notification_failures_total") == 2
        assert metric(url, "cairn_registry_notifications_sent_total") == len(Receiver.events)
    finally:
        srv.shutdown()


def test_accept_negotiation(start, tmp_path):
    p, url, _ = start_registry(start, tmp_path)
    cfg, layer = os.urandom(100), os.urandom(1000)
    blobs = []
    for b in (cfg, layer):
        d, r = push_blob(url, "neg/app", b)
        assert r.status_code == 201
        blobs.append((d, len(b)))
    oci, r = push_manifest(url, "neg/app", "oci", blobs)
    assert r.status_code == 201
    r = requests.get(f"{url}/v2/neg/app/manifests/oci", headers={"Accept": DOCKER_MANIFEST}, timeout=5)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    for accept in (OCI_MANIFEST, f"{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.5", "*/*", None):
        r = requests.get(f"{url}/v2/neg/app/manifests/oci", timeout=5,
                         headers={"Accept": accept} if accept else {})
        assert r.status_code == 200 and r.headers["Content-Type"] == OCI_MANIFEST, accept
    # a Docker manifest list by tag, to a client that takes only schema 2 manifests: its linux/amd64 one
    child, r = push_manifest(url, "neg/app", "amd64", blobs, media_type=DOCKER_MANIFEST,
                             config_type="application/vnd.docker.container.image.v1+json")
    assert r.status_code == 201
    lst = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": child, "size": 1,
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    r = requests.put(f"{url}/v2/neg/app/manifests/multi", data=lst, headers={"Content-Type": DOCKER_LIST},
                     timeout=5)
    assert r.status_code == 201
    r = requests.get(f"{url}/v2/neg/app/manifests/multi", headers={"Accept": DOCKER_MANIFEST}, timeout=5)
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == child
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    r = requests.get(f"{url}/v2/neg/app/manifests/multi", headers={"Accept": f"{DOCKER_MANIFEST},{DOCKER_LIST}"},
                     timeout=5)
    assert r.headers["Docker-Content-Digest"] == sha(lst)
    r = requests.get(f"{url}/v2/neg/app/manifests/{sha(lst)}", headers={"Accept": DOCKER_MANIFEST}, timeout=5)
    assert r.status_code == 404


def test_tls_listener_with_skopeo_and_token_realm(start, tmp_path):
    cert, key = make_cert(tmp_path, "localhost")
    (tmp_path / "pw").write_text("hunter2\n")
    port = free_port()
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  registry:
    role: registry
    listen: ["127.0.0.1:{port}"]
    tls: {{cert: {cert}, key: {key}}}
    users: [{{name: ci, password_file: pw, grants: [{{repositories: "sec/*", actions: [pull, push]}}]}}]
""")
    start(["run", "registry", "-c", stack])
    url = f"https://localhost:{port}"
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1, verify=str(cert)).status_code == 200,
             what="registry ready over https")
    r = requests.get(url + "/v2/", timeout=5, verify=str(cert))
    assert r.status_code == 401 and f'realm="https://localhost:{port}/token"' in r.headers["WWW-Authenticate"]
    ociimage.make(str(tmp_path / "img"), nlayers=1)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(cert.read_bytes())
    skopeo("copy", f"--dest-cert-dir={certs}", "--dest-creds=ci:hunter2", f"oci:{tmp_path}/img:latest",
           f"docker://localhost:{port}/sec/app:1")
    info = json.loads(skopeo("inspect", f"--cert-dir={certs}", "--creds=ci:hunter2",
                             f"docker://localhost:{port}/sec/app:1"))
    assert info["RepoTags"] == ["1"]
    # plain HTTP on the TLS port is refused, not served
    try:
        plain = requests.get(f"http://127.0.0.1:{port}/v2/", timeout=5).status_code
    except requests.RequestException:
        plain = None
    assert plain != 200


def test_kill_9_during_uploads_and_collection_loses_no_image(start, tmp_path):
    import signal
    from conftest import pid_alive
    port = free_port()
    p, url, stack = start_registry(start, tmp_path, port, extra="    gc: {interval: 1s, grace: 1s}\n")
    host = url[len("http://"):]
    digest = ociimage.make(str(tmp_path / "img"), nlayers=3)
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/img:latest", f"docker://{host}/keep/app:1")
    # garbage for the collector and uploads in flight, then kill -9 in the middle of it
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            try:
                push_blob(url, "junk/x", os.urandom(20000))
                loc = requests.post(f"{url}/v2/junk/y/blobs/uploads/", timeout=2).headers["Location"]
                requests.patch(url + loc, data=os.urandom(200000), timeout=2)
            except requests.RequestException:
                return
    t = threading.Thread(target=churn)
    t.start()
    wait_for(lambda: metric(url, "cairn_registry_gc_blobs_deleted_total") > 0, timeout=20,
             what="collection to be removing garbage")
    os.kill(p.pid, signal.SIGKILL)
    stop.set()
    t.join()
    wait_for(lambda: not pid_alive(p.pid), timeout=5, what="the process to die")
    start(["run", "registry", "-c", stack], name="again")
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, what="registry again")
    runs = metric(url, "cairn_registry_gc_runs_total")
    wait_for(lambda: metric(url, "cairn_registry_gc_runs_total") >= runs + 2, timeout=20, what="two collections")
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{host}/keep/app:1"))["Digest"] == digest
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/keep/app:1", f"oci:{tmp_path}/back:latest")
    assert sorted(os.listdir(tmp_path / "back" / "blobs" / "sha256")) == \
        sorted(os.listdir(tmp_path / "img" / "blobs" / "sha256"))


def test_pull_through_cache_of_a_second_registry(start, tmp_path):
    """A cairn registry with token auth as the upstream; a second one as its pull-through
    cache with credentials: pulls fill the cache, a tag that moves upstream moves in the
    cache, and what was pulled keeps being served when the upstream is gone."""
    up_dir, cache_dir = tmp_path / "up", tmp_path / "cache"
    up_dir.mkdir()
    cache_dir.mkdir()
    (up_dir / "pw").write_text("upsecret\n")
    (cache_dir / "pw").write_text("upsecret\n")
    up_port = free_port()
    up_stack = write_stack(up_dir, f"""
data_dir: data
services:
  registry:
    role: registry
    listen: ["127.0.0.1:{up_port}"]
    users: [{{name: mirror, password_file: pw, grants: [{{repositories: "*", actions: [pull, push]}}]}}]
""")
    up = start(["run", "registry", "-c", up_stack], name="upstream")
    up_url = f"http://127.0.0.1:{up_port}"
    wait_for(lambda: requests.get(up_url + "/-/ready", timeout=1).status_code == 200, what="upstream ready")
    cache, url, _ = start_registry(start, cache_dir, extra=f"""    proxy: {{remote: "{up_url}", username: mirror, password_file: pw}}
""")
    host, up_host = url[len("http://"):], up_url[len("http://"):]
    d1 = ociimage.make(str(tmp_path / "one"), nlayers=2)
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds=mirror:upsecret", f"oci:{tmp_path}/one:latest",
           f"docker://{up_host}/lib/app:stable")
    # a pull through the cache: anonymous to it, with the cache's credentials upstream
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/lib/app:stable", f"oci:{tmp_path}/back1:latest")
    assert sorted(os.listdir(tmp_path / "back1" / "blobs" / "sha256")) == \
        sorted(os.listdir(tmp_path / "one" / "blobs" / "sha256"))
    cached = set(os.listdir(tmp_path / "one" / "blobs" / "sha256"))
    assert cached <= {f for _, _, fs in os.walk(cache_dir / "data" / "registry" / "blobs") for f in fs}
    # the tag moves upstream: the cache follows it
    d2 = ociimage.make(str(tmp_path / "two"), nlayers=1)
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds=mirror:upsecret", f"oci:{tmp_path}/two:latest",
           f"docker://{up_host}/lib/app:stable")
    r = requests.get(f"{url}/v2/lib/app/manifests/stable", headers={"Accept": OCI_MANIFEST}, timeout=10)
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == d2
    # no pushes into a cache; unknown names are the upstream's 404
    r = requests.post(f"{url}/v2/lib/app/blobs/uploads/", timeout=5)
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    r = requests.get(f"{url}/v2/lib/app/manifests/nosuchtag", headers={"Accept": OCI_MANIFEST}, timeout=10)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    # the upstream goes away: what was pulled is still served, by tag and by digest
    up.signal(15)
    up.wait(10)
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/lib/app@{d1}", f"oci:{tmp_path}/back2:latest")
    assert sorted(os.listdir(tmp_path / "back2" / "blobs" / "sha256")) == sorted(cached)
    r = requests.get(f"{url}/v2/lib/app/manifests/stable", headers={"Accept": OCI_MANIFEST}, timeout=10)
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == d2
    r = requests.get(f"{url}/v2/lib/other/manifests/1", headers={"Accept": OCI_MANIFEST}, timeout=10)
    assert r.status_code == 502


def test_s3_storage_on_the_s3_role(start, tmp_path):
    """Layers and configs in a bucket of cairn's own s3 role (a 20 MB layer goes up in
    multipart parts), pulled back whole and by range; collection deletes the objects
    of a deleted image."""
    from test_s3 import client, creds, start_s3
    s3dir, regdir = tmp_path / "s3", tmp_path / "reg"
    s3dir.mkdir()
    regdir.mkdir()
    _, s3url, _ = start_s3(start, s3dir)
    ak, sk = creds(str(s3dir / "data"))
    s3 = client(s3url, ak, sk)
    s3.create_bucket(Bucket="images")
    (regdir / "secret").write_text(sk + "\n")
    p, url, _ = start_registry(start, regdir, extra=f"""    storage:
      s3: {{endpoint: "{s3url}", bucket: images, prefix: reg/, access_key: {ak}, secret_key_file: secret}}
    gc: {{interval: 1s, grace: 2s}}
""")
    host = url[len("http://"):]
    digest = ociimage.make(str(tmp_path / "img"), sizes=[20_000_000, 300_000])
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/img:latest", f"docker://{host}/s3/app:1")
    local = set(os.listdir(tmp_path / "img" / "blobs" / "sha256"))
    objs = s3.list_objects_v2(Bucket="images", Prefix="reg/blobs/sha256/").get("Contents", [])
    in_bucket = {o["Key"].split("/")[3]: o["Size"] for o in objs}
    assert set(in_bucket) == local - {digest[7:]}      # layers and config; the manifest stays local
    for h, size in in_bucket.items():
        assert size == os.path.getsize(tmp_path / "img" / "blobs" / "sha256" / h)
    assert metric(s3url, 'cairn_s3_requests_total{api="CompleteMultipartUpload"}') == 1
    # the same blobs pushed again to another repository: linked, not stored twice
    for h in in_bucket:
        data = (tmp_path / "img" / "blobs" / "sha256" / h).read_bytes()
        assert push_blob(url, "s3/again", data)[1].status_code == 201
    assert len(s3.list_objects_v2(Bucket="images", Prefix="reg/blobs/").get("Contents", [])) == len(in_bucket)
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/s3/app:1", f"oci:{tmp_path}/back:latest")
    assert sorted(os.listdir(tmp_path / "back" / "blobs" / "sha256")) == sorted(local)
    big = max(in_bucket, key=in_bucket.get)
    want = (tmp_path / "img" / "blobs" / "sha256" / big).read_bytes()
    r = requests.get(f"{url}/v2/s3/app/blobs/sha256:{big}", headers={"Range": "bytes=16777000-16777999"},
                     timeout=10)
    assert r.status_code == 206 and r.content == want[16777000:16778000]
    r = requests.get(f"{url}/v2/s3/app/blobs/sha256:{big}", timeout=30)
    assert r.status_code == 200 and sha(r.content) == "sha256:" + big
    # the image goes: so do its objects
    assert requests.delete(f"{url}/v2/s3/app/manifests/{digest}", timeout=5).status_code == 202
    wait_for(lambda: not s3.list_objects_v2(Bucket="images", Prefix="reg/").get("Contents"), timeout=30,
             what="collection to delete the image's objects")


def test_ranges(start, tmp_path):
    p, url, _ = start_registry(start, tmp_path)
    data = os.urandom(1000)
    d, r = push_blob(url, "rng/app", data)
    assert r.status_code == 201
    for rng, want in (("bytes=0-9", data[:10]), ("bytes=990-", data[990:]), ("bytes=-10", data[-10:]),
                      ("bytes=995-5000", data[995:]), ("bytes=-5000", data)):
        r = requests.get(f"{url}/v2/rng/app/blobs/{d}", headers={"Range": rng}, timeout=5)
        assert r.status_code == 206 and r.content == want, rng
        first = 1000 - len(want)
        assert r.headers["Content-Range"] == f"bytes {first}-999/1000" or rng == "bytes=0-9"
    for rng in ("bytes=1000-", "bytes=-0", "bytes=5-2", "bytes=a-b", "bytes=-", "bytes=1-2-3", "bytes= 1-2x"):
        r = requests.get(f"{url}/v2/rng/app/blobs/{d}", headers={"Range": rng}, timeout=5)
        assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */1000", rng
    loc = requests.post(f"{url}/v2/rng/app/blobs/uploads/", timeout=5).headers["Location"]
    for cr in ("-4", "0-", "+0-4", "0--4"):
        r = requests.patch(url + loc, data=b"abcde", headers={"Content-Range": cr}, timeout=5)
        assert r.status_code == 416, cr
    r = requests.patch(url + loc, data=b"abcde", headers={"Content-Range": "0-4"}, timeout=5)
    assert r.status_code == 202 and r.headers["Range"] == "0-4"


def test_pull_through_follows_redirects_of_distribution_on_s3(start, tmp_path):
    """The upstream is Debian's docker-registry (Distribution 2.8) storing into cairn's s3
    role, as a registry on S3 is run: it answers blob GETs with 307 to presigned S3 URLs,
    which the cache follows (without its credentials)."""
    import signal
    import subprocess as sp
    from test_s3 import client, start_s3
    s3dir, cdir = tmp_path / "s3", tmp_path / "cache"
    s3dir.mkdir()
    cdir.mkdir()
    _, s3url, _ = start_s3(start, s3dir, extra="""    keys: [{access_key: DISTKEY, secret_key: distsecret123456, grants: [{bucket: "*", actions: [read, write]}]}]
""")
    client(s3url, "DISTKEY", "distsecret123456").create_bucket(Bucket="dist")
    dport = free_port()
    (tmp_path / "dist.yml").write_text(f"""version: 0.1
log: {{level: info}}
storage:
  s3: {{accesskey: DISTKEY, secretkey: distsecret123456, region: us-east-1, regionendpoint: "{s3url}",
        bucket: dist, secure: false, v4auth: true}}
http: {{addr: "127.0.0.1:{dport}"}}
""")
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    log = open(tmp_path / "dist.log", "wb")
    dist = sp.Popen(["docker-registry", "serve", str(tmp_path / "dist.yml")], stdout=log, stderr=log, env=env,
                    start_new_session=True)
    try:
        durl = f"http://127.0.0.1:{dport}"
        wait_for(lambda: requests.get(durl + "/v2/", timeout=1).status_code == 200, what="distribution ready")
        digest = ociimage.make(str(tmp_path / "img"), nlayers=2)
        skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path}/img:latest", f"docker://127.0.0.1:{dport}/lib/app:1")
        layer = max(os.listdir(tmp_path / "img" / "blobs" / "sha256"),
                    key=lambda h: os.path.getsize(tmp_path / "img" / "blobs" / "sha256" / h))
        r = requests.get(f"{durl}/v2/lib/app/blobs/sha256:{layer}", allow_redirects=False, timeout=5)
        assert r.status_code == 307 and r.headers["Location"].startswith(s3url + "/dist/")
        _, url, _ = start_registry(start, cdir, extra=f"""    proxy: {{remote: "{durl}"}}
""")
        host = url[len("http://"):]
        skopeo("copy", "--src-tls-verify=false", f"docker://{host}/lib/app:1", f"oci:{tmp_path}/back:latest")
        assert sorted(os.listdir(tmp_path / "back" / "blobs" / "sha256")) == \
            sorted(os.listdir(tmp_path / "img" / "blobs" / "sha256"))
        assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{host}/lib/app:1"))["Digest"] == digest
    finally:
        os.killpg(dist.pid, signal.SIGTERM)
        dist.wait(10)
        log.close()
