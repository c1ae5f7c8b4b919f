"""Writes a small OCI image layout (random layers, a config, a manifest tagged
"latest") for the registry tests: make(DIR, LAYERS) returns the manifest's digest."""
import gzip
import hashlib
import io
import json
import os
import tarfile


def make(out, nlayers=2, size=100000, sizes=None, gz=True):
    """sizes: each layer's file size (default: size * (i + 1)); gz: gzip the layers
    (at level 1: random bytes do not shrink, so the level only costs time)."""
    os.makedirs(out + "/blobs/sha256", exist_ok=True)
    sizes = sizes or [size * (i + 1) for i in range(nlayers)]
    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        open(f"{out}/blobs/sha256/{d}", "wb").write(data)
        return "sha256:" + d, len(data)
    layers = []
    for i, sz in enumerate(sizes):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as t:
            data = os.urandom(sz)
            ti = tarfile.TarInfo(f"file{i}"); ti.size = len(data); ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
        body = gzip.compress(raw.getvalue(), compresslevel=1, mtime=0) if gz else raw.getvalue()
        d, n = blob(body)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gz else ""),
                       "digest": d, "size": n, "diff": "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [l["diff"] for l in layers]}, "config": {}}).encode()
    cd, cn = blob(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                      "layers": [{k: v for k, v in l.items() if k != "diff"} for l in layers]}).encode()
    md, mn = blob(man)
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(out + "/index.json", "w"))
    open(out + "/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
    return md
