#!/usr/bin/python3
"""Writes cairn's OCI image layout (make image): one layer with the binary, exactly the
shared libraries it links (as ldd resolves them on this Debian machine), the loader,
the CA certificates, /etc/passwd and /etc/group with a non-root user, /data for the
stores and /tmp; nothing else.

Reproducible: the same binary and the same system files give the same digests. Every
entry is sorted, its times are the commit's time (SOURCE_DATE_EPOCH, or the last
commit's, or 0), owners are numeric, and gzip gets no name and no time.

usage: mkimage.py BINARY OUTDIR TAG REVISION SOURCE
"""
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

UID = 10001


def ldd(binary):
    """Paths of the loader and every library, as the loader finds them here."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)", line)
        if m:
            paths.append(m.group(1))
    if not paths:
        sys.exit("mkimage: ldd found no libraries (is the binary static?)")
    return sorted(set(paths))


def layer(binary, epoch):
    files = {}  # path in the image -> (bytes, mode)
    files["usr/local/bin/cairn"] = (open(binary, "rb").read(), 0o755)
    for p in ldd(binary):
        files[p.lstrip("/")] = (open(os.path.realpath(p), "rb").read(), 0o755)
    files["etc/ssl/certs/ca-certificates.crt"] = (open("/etc/ssl/certs/ca-certificates.crt", "rb").read(), 0o644)
    files["etc/passwd"] = (f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                           f"cairn:x:{UID}:{UID}:cairn:/data:/usr/sbin/nologin\n".encode(), 0o644)
    files["etc/group"] = (f"root:x:0:\ncairn:x:{UID}:\n".encode(), 0o644)
    files["etc/nsswitch.conf"] = (b"passwd: files\ngroup: files\nhosts: files dns\n", 0o644)
    dirs = {"data": (UID, 0o755), "tmp": (0, 0o1777)}
    for f in files:
        parts = f.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.setdefault("/".join(parts[:i]), (0, 0o755))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(set(dirs) | set(files)):
            ti = tarfile.TarInfo(name)
            ti.mtime = epoch
            ti.uname = ti.gname = ""
            if name in files:
                data, mode = files[name]
                ti.size, ti.mode, ti.uid, ti.gid = len(data), mode, 0, 0
                t.addfile(ti, io.BytesIO(data))
            else:
                uid, mode = dirs[name]
                ti.type, ti.mode, ti.uid, ti.gid = tarfile.DIRTYPE, mode, uid, uid
                t.addfile(ti)
    return raw.getvalue()


def main():
    binary, out, tag, revision, source = sys.argv[1:6]
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or 0)
    created = __import__("datetime").datetime.utcfromtimestamp(epoch).strftime("%Y-%m-%dT%H:%M:%SZ")
    os.makedirs(f"{out}/blobs/sha256", exist_ok=True)

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        with open(f"{out}/blobs/sha256/{d}", "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + d, "size": len(data)}
    tar = layer(binary, epoch)
    gz = gzip.compress(tar, compresslevel=9, mtime=0)
    ann = {"org.opencontainers.image.version": tag, "org.opencontainers.image.revision": revision,
           "org.opencontainers.image.source": source, "org.opencontainers.image.created": created,
           "org.opencontainers.image.title": "cairn",
           "org.opencontainers.image.description": "cloud-native reference infrastructure in C, one binary",
           "org.opencontainers.image.licenses": "NOASSERTION"}
    config = {"created": created, "architecture": "amd64", "os": "linux",
              "config": {"User": f"{UID}:{UID}", "Entrypoint": ["/usr/local/bin/cairn"], "Cmd": ["up"],
                         "WorkingDir": "/data", "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Labels": ann},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
              "history": [{"created": created, "created_by": "scripts/mkimage.py"}]}
    cfg = blob(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    lay = blob(gz)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **cfg),
                "layers": [dict(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", **lay)],
                "annotations": ann}
    man = blob(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [dict(mediaType="application/vnd.oci.image.manifest.v1+json",
                                annotations={"org.opencontainers.image.ref.name": tag}, **man)]}
    with open(f"{out}/index.json", "w") as f:
        json.dump(index, f, sort_keys=True, separators=(",", ":"))
    with open(f"{out}/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    # only this build's blobs stay
    keep = {cfg["digest"][7:], lay["digest"][7:], man["digest"][7:]}
    for name in os.listdir(f"{out}/blobs/sha256"):
        if name not in keep:
            os.remove(f"{out}/blobs/sha256/{name}")
    print(f"{out}: cairn:{tag} {man['digest']} (layer {lay['size']} bytes)")


if __name__ == "__main__":
    main()
