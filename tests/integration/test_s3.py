"""role s3: the S3 API as awscli, boto3, s3cmd and rclone use it, against the real process."""
import hashlib
import hmac
import os
import random
import signal
import stat
import subprocess
import threading
import time

import boto3
import botocore
import pytest
import requests
from botocore.auth import S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from conftest import free_port, pid_alive, wait_for, write_stack


def creds(data_dir):
    out = {}
    with open(os.path.join(data_dir, "s3", "credentials")) as f:
        for line in f:
            if "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
    return out["aws_access_key_id"], out["aws_secret_access_key"]


def start_s3(start, tmp_path, extra="", port=None):
    port = port or free_port()
    stack = write_stack(tmp_path, f"""
data_dir: data
services:
  s3:
    role: s3
    listen: ["127.0.0.1:{port}"]
{extra}""")
    p = start(["run", "s3", "-c", stack])
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, what="s3 ready")
    return p, url, stack


def client(url, ak, sk, **cfg):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=ak, aws_secret_access_key=sk,
                        region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, signature_version="s3v4", **cfg))


def aws(tmp_path, url, *args, check=True):
    env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "data" / "s3" / "credentials"),
               AWS_CONFIG_FILE="/dev/null", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    r = subprocess.run(["/usr/bin/aws", "--profile", "cairn", "--endpoint-url", url] + list(args),
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def code(e):
    return e.value.response["Error"]["Code"]


def test_awscli_with_the_key_written_at_first_start(start, tmp_path):
    p, url, _ = start_s3(start, tmp_path)
    cred = tmp_path / "data" / "s3" / "credentials"
    assert stat.S_IMODE(os.stat(cred).st_mode) == 0o600
    assert cred.read_text().startswith("[cairn]\n")
    aws(tmp_path, url, "s3", "mb", "s3://photos")
    assert "photos" in aws(tmp_path, url, "s3", "ls").stdout
    small = tmp_path / "small.txt"
    small.write_text("hello s3\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(19 * 1024 * 1024 + 12345))      # multipart: 8 MiB parts
    aws(tmp_path, url, "s3", "cp", str(small), "s3://photos/a/small.txt")
    aws(tmp_path, url, "s3", "cp", str(big), "s3://photos/a/b/big.bin")
    out = aws(tmp_path, url, "s3", "ls", "s3://photos/a/").stdout
    assert "PRE b/" in out and "small.txt" in out
    head = aws(tmp_path, url, "s3api", "head-object", "--bucket", "photos", "--key", "a/b/big.bin").stdout
    assert '-3\\"' in head and str(big.stat().st_size) in head        # md5-of-md5s-N
    aws(tmp_path, url, "s3", "cp", "s3://photos/a/b/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    r = aws(tmp_path, url, "s3", "rb", "s3://photos", check=False)
    assert r.returncode != 0 and "BucketNotEmpty" in r.stderr
    aws(tmp_path, url, "s3", "rm", "--recursive", "s3://photos/")
    aws(tmp_path, url, "s3", "rb", "s3://photos")
    assert "photos" not in aws(tmp_path, url, "s3", "ls").stdout
    # every data file went with its object
    files = [f for _, _, fs in os.walk(tmp_path / "data" / "s3" / "data") for f in fs]
    assert files == []
    # the request counters, by API call, on the same port
    m = requests.get(url + "/metrics", timeout=5).text
    assert 'cairn_s3_requests_total{api="UploadPart"} 3' in m
    assert 'cairn_s3_requests_total{api="CreateBucket"} 1' in m


def test_presigned_urls_and_expiry(start, tmp_path):
    p, url, _ = start_s3(start, tmp_path)
    ak, sk = creds(tmp_path / "data")
    c = client(url, ak, sk)
    c.create_bucket(Bucket="pre")
    c.put_object(Bucket="pre", Key="doc.txt", Body=b"presigned body")
    good = aws(tmp_path, url, "s3", "presign", "s3://pre/doc.txt", "--expires-in", "300").stdout.strip()
    r = requests.get(good, timeout=5)
    assert r.status_code == 200 and r.content == b"presigned body"
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    r = requests.get(bad, timeout=5)
    assert r.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in r.content
    put = c.generate_presigned_url("put_object", Params={"Bucket": "pre", "Key": "up.txt"}, ExpiresIn=60)
    assert requests.put(put, data=b"uploaded", timeout=5).status_code == 200
    assert c.get_object(Bucket="pre", Key="up.txt")["Body"].read() == b"uploaded"
    short = c.generate_presigned_url("get_object", Params={"Bucket": "pre", "Key": "doc.txt"}, ExpiresIn=1)

    def expired():
        r = requests.get(short, timeout=5)
        return r.status_code == 403 and b"Request has expired" in r.content
    wait_for(expired, timeout=5, interval=0.25, what="the presigned URL to expire")
    # X-Amz-Expires out of its range (1 s to 7 days), signed by botocore's own
    # signer (awscrt's, which boto3 picks here, refuses to make such URLs)
    for exp, msg in ((0, b"Request has expired"), (-1000, b"Access Denied"), (604801, b"Access Denied"),
                     (60, None)):
        req = AWSRequest(method="GET", url=f"{url}/pre/doc.txt")
        S3SigV4QueryAuth(Credentials(ak, sk), "s3", "us-east-1", expires=exp).add_auth(req)
        r = requests.get(req.url, timeout=5)
        if msg:
            assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content and msg in r.content, exp
        else:
            assert r.status_code == 200 and r.content == b"presigned body"


def test_objects_with_boto3(start, tmp_path):
    p, url, _ = start_s3(start, tmp_path)
    ak, sk = creds(tmp_path / "data")
    c = client(url, ak, sk)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.create_bucket(Bucket="Bad_Name")
    assert code(e) == "InvalidBucketName"
    c.create_bucket(Bucket="bkt1")
    c.put_object(Bucket="bkt1", Key="kept", Body=b"k")
    c.create_bucket(Bucket="bkt1")     # us-east-1: 200 to the owner, and nothing is lost
    assert c.get_object(Bucket="bkt1", Key="kept")["Body"].read() == b"k"
    c.delete_object(Bucket="bkt1", Key="kept")
    body = bytes(range(256)) * 1000
    r = c.put_object(Bucket="bkt1", Key="dir/obj", Body=body, ContentType="image/png",
                     Metadata={"color": "blue"}, CacheControl="max-age=60", ChecksumAlgorithm="CRC32C")
    assert r["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    g = c.get_object(Bucket="bkt1", Key="dir/obj")
    assert g["Body"].read() == body and g["ContentType"] == "image/png"
    assert g["Metadata"] == {"color": "blue"} and g["CacheControl"] == "max-age=60"
    assert c.get_object(Bucket="bkt1", Key="dir/obj", Range="bytes=10-19")["Body"].read() == body[10:20]
    assert c.get_object(Bucket="bkt1", Key="dir/obj", Range="bytes=-5")["Body"].read() == body[-5:]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.get_object(Bucket="bkt1", Key="dir/obj", Range="bytes=999999-")
    assert code(e) == "InvalidRange"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.get_object(Bucket="bkt1", Key="dir/obj", IfMatch='"nope"')
    assert code(e) == "PreconditionFailed"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.get_object(Bucket="bkt1", Key="dir/obj", IfNoneMatch=r["ETag"])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    # a checksum that does not match the body is refused and nothing is stored
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.put_object(Bucket="bkt1", Key="bad", Body=b"abc", ChecksumSHA256="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    assert code(e) == "BadDigest"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.head_object(Bucket="bkt1", Key="bad")
    assert e.value.response["Error"]["Code"] == "404"
    # copies: metadata kept, or replaced
    c.copy_object(Bucket="bkt1", Key="copy1", CopySource="bkt1/dir/obj")
    assert c.head_object(Bucket="bkt1", Key="copy1")["Metadata"] == {"color": "blue"}
    c.copy_object(Bucket="bkt1", Key="copy2", CopySource={"Bucket": "bkt1", "Key": "dir/obj"},
                  MetadataDirective="REPLACE", Metadata={"k": "v"}, ContentType="text/plain")
    h = c.head_object(Bucket="bkt1", Key="copy2")
    assert h["Metadata"] == {"k": "v"} and h["ContentType"] == "text/plain" and h["ContentLength"] == len(body)
    # listing: delimiter, pagination, start-after
    for i in range(25):
        c.put_object(Bucket="bkt1", Key=f"list/{i:03d}", Body=b"x")
    c.put_object(Bucket="bkt1", Key="list/sub/deep", Body=b"y")
    keys, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = c.list_objects_v2(Bucket="bkt1", Prefix="list/", Delimiter="/", MaxKeys=7, **kw)
        keys += [o["Key"] for o in page.get("Contents", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert keys == [f"list/{i:03d}" for i in range(25)] + ["list/sub/"]
    top = c.list_objects_v2(Bucket="bkt1", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dir/", "list/"]
    assert [o["Key"] for o in top["Contents"]] == ["copy1", "copy2"]
    v1 = c.list_objects(Bucket="bkt1", Prefix="list/0", Marker="list/020")
    assert [o["Key"] for o in v1["Contents"]] == ["list/021", "list/022", "list/023", "list/024"]
    # batch delete
    d = c.delete_objects(Bucket="bkt1", Delete={"Objects": [{"Key": f"list/{i:03d}"} for i in range(25)]})
    assert len(d["Deleted"]) == 25
    assert c.list_objects_v2(Bucket="bkt1", Prefix="list/")["KeyCount"] == 1
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.get_object(Bucket="bkt1", Key="missing")
    assert code(e) == "NoSuchKey"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.get_object(Bucket="nobucket", Key="x")
    assert code(e) == "NoSuchBucket"
    # wrong secret, unknown key
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(url, ak, sk + "x").list_buckets()
    assert code(e) == "SignatureDoesNotMatch"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(url, "AKIDUNKNOWN", sk).list_buckets()
    assert code(e) == "InvalidAccessKeyId"


def test_multipart_with_boto3(start, tmp_path):
    p, url, _ = start_s3(start, tmp_path)
    ak, sk = creds(tmp_path / "data")
    c = client(url, ak, sk)
    c.create_bucket(Bucket="mpu")
    c.put_object(Bucket="mpu", Key="src", Body=b"S" * (6 << 20))
    up = c.create_multipart_upload(Bucket="mpu", Key="obj", ContentType="text/x-test")["UploadId"]
    part1 = os.urandom(5 << 20)
    e1 = c.upload_part(Bucket="mpu", Key="obj", UploadId=up, PartNumber=1, Body=part1)["ETag"]
    e2 = c.upload_part_copy(Bucket="mpu", Key="obj", UploadId=up, PartNumber=2, CopySource="mpu/src",
                            CopySourceRange="bytes=0-1023")["CopyPartResult"]["ETag"]
    e3 = c.upload_part(Bucket="mpu", Key="obj", UploadId=up, PartNumber=3, Body=b"tail")["ETag"]
    parts = c.list_parts(Bucket="mpu", Key="obj", UploadId=up)["Parts"]
    assert [(x["PartNumber"], x["Size"]) for x in parts] == [(1, 5 << 20), (2, 1024), (3, 4)]
    assert [u["UploadId"] for u in c.list_multipart_uploads(Bucket="mpu")["Uploads"]] == [up]
    # every part but the last must be at least 5 MiB
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.complete_multipart_upload(Bucket="mpu", Key="obj", UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}, {"PartNumber": 3, "ETag": e3}]})
    assert code(e) == "EntityTooSmall"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.complete_multipart_upload(Bucket="mpu", Key="obj", UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
    assert code(e) == "InvalidPartOrder"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.complete_multipart_upload(Bucket="mpu", Key="obj", UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": '"0000"'}]})
    assert code(e) == "InvalidPart"
    r = c.complete_multipart_upload(Bucket="mpu", Key="obj", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    md5s = b"".join(bytes.fromhex(x.strip('"')) for x in (e1, e2))
    assert r["ETag"] == '"%s-2"' % hashlib.md5(md5s).hexdigest()
    g = c.get_object(Bucket="mpu", Key="obj")
    assert g["Body"].read() == part1 + b"S" * 1024 and g["ContentType"] == "text/x-test"
    assert c.get_object(Bucket="mpu", Key="obj", Range="bytes=5242870-5242889")["Body"].read() == \
        part1[-10:] + b"S" * 10
    assert c.get_object(Bucket="mpu", Key="obj", PartNumber=2)["Body"].read() == b"S" * 1024
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.upload_part(Bucket="mpu", Key="obj", UploadId=up, PartNumber=1, Body=b"x")
    assert code(e) == "NoSuchUpload"
    # a part sent twice, both answers listed (the second upload of part 1 won): the
    # last entry of a repeated number counts, the earlier one is not checked
    up3 = c.create_multipart_upload(Bucket="mpu", Key="again")["UploadId"]
    eb = c.upload_part(Bucket="mpu", Key="again", UploadId=up3, PartNumber=1, Body=b"B" * 8)["ETag"]
    ea = c.upload_part(Bucket="mpu", Key="again", UploadId=up3, PartNumber=1, Body=b"A" * 8)["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.complete_multipart_upload(Bucket="mpu", Key="again", UploadId=up3, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": ea}, {"PartNumber": 1, "ETag": eb}]})
    assert code(e) == "InvalidPart"
    c.complete_multipart_upload(Bucket="mpu", Key="again", UploadId=up3, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": eb}, {"PartNumber": 1, "ETag": ea}]})
    assert c.get_object(Bucket="mpu", Key="again")["Body"].read() == b"A" * 8
    c.delete_object(Bucket="mpu", Key="again")
    up2 = c.create_multipart_upload(Bucket="mpu", Key="gone")["UploadId"]
    c.upload_part(Bucket="mpu", Key="gone", UploadId=up2, PartNumber=1, Body=b"x" * 100)
    c.abort_multipart_upload(Bucket="mpu", Key="gone", UploadId=up2)
    assert "Uploads" not in c.list_multipart_uploads(Bucket="mpu")
    files = [f for _, _, fs in os.walk(tmp_path / "data" / "s3" / "data") for f in fs]
    assert len(files) == 3      # src, and obj's two parts: the unused and aborted parts are gone


def chunked_put(url, ak, sk, bucket, key, data, chunk=65536, corrupt=False):
    """A PUT with a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body, as the Java and Go SDKs send."""
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    sizes = sum(len(f"{len(c):x};chunk-signature=".encode()) + 64 + 4 + len(c) for c in chunks)
    req = AWSRequest(method="PUT", url=f"{url}/{bucket}/{key}", headers={
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(sizes)})
    SigV4Auth(Credentials(ak, sk), "s3", "us-east-1").add_auth(req)
    amzdate = req.headers["X-Amz-Date"]
    day = amzdate[:8]
    seed = req.headers["Authorization"].split("Signature=")[1]

    def hm(k, m):
        return hmac.new(k, m.encode(), hashlib.sha256).digest()
    key_ = hm(hm(hm(hm(("AWS4" + sk).encode(), day), "us-east-1"), "s3"), "aws4_request")
    prev, body = seed, b""
    for i, c in enumerate(chunks):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amzdate, f"{day}/us-east-1/s3/aws4_request", prev,
                         hashlib.sha256(b"").hexdigest(), hashlib.sha256(c).hexdigest()])
        sig = hmac.new(key_, sts.encode(), hashlib.sha256).hexdigest()
        if corrupt and i == 1:
            sig = "0" * 64
        body += f"{len(c):x};chunk-signature={sig}\r\n".encode() + c + b"\r\n"
        prev = sig
    return requests.put(req.url, data=body, headers=dict(req.headers), timeout=10)


def test_aws_chunked_signed_payload(start, tmp_path):
    p, url, _ = start_s3(start, tmp_path)
    ak, sk = creds(tmp_path / "data")
    c = client(url, ak, sk)
    c.create_bucket(Bucket="chk")
    data = os.urandom(200000)
    r = chunked_put(url, ak, sk, "chk", "good", data)
    assert r.status_code == 200, r.text
    assert c.get_object(Bucket="chk", Key="good")["Body"].read() == data
    r = chunked_put(url, ak, sk, "chk", "bad", data, corrupt=True)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    with pytest.raises(botocore.exceptions.ClientError):
        c.head_object(Bucket="chk", Key="bad")


def test_grants_public_buckets_and_virtual_hosts(start, tmp_path):
    (tmp_path / "ro.secret").write_text("readonlysecret\n")
    extra = """    keys:
      - {access_key: ADMINKEY, secret_key_env: CAIRN_TEST_S3_SECRET, grants: [{bucket: "*", actions: [read, write]}]}
      - {access_key: READKEY, secret_key_file: ro.secret, grants: [{bucket: assets, actions: [read]}]}
    public_buckets: [assets]
"""
    os.environ["CAIRN_TEST_S3_SECRET"] = "adminsecret"
    try:
        p, url, _ = start_s3(start, tmp_path, extra)
    finally:
        del os.environ["CAIRN_TEST_S3_SECRET"]
    assert not (tmp_path / "data" / "s3" / "credentials").exists()
    admin = client(url, "ADMINKEY", "adminsecret")
    ro = client(url, "READKEY", "readonlysecret")
    admin.create_bucket(Bucket="assets")
    admin.create_bucket(Bucket="private")
    admin.put_object(Bucket="assets", Key="logo.svg", Body=b"<svg/>", ContentType="image/svg+xml")
    admin.put_object(Bucket="private", Key="secret", Body=b"s")
    assert ro.get_object(Bucket="assets", Key="logo.svg")["Body"].read() == b"<svg/>"
    for call in (lambda: ro.put_object(Bucket="assets", Key="x", Body=b"x"),
                 lambda: ro.get_object(Bucket="private", Key="secret")):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    # anonymous: read of the public bucket only
    r = requests.get(url + "/assets/logo.svg", timeout=5)
    assert r.status_code == 200 and r.content == b"<svg/>" and r.headers["Content-Type"] == "image/svg+xml"
    assert requests.get(url + "/private/secret", timeout=5).status_code == 403
    assert requests.put(url + "/assets/new", data=b"x", timeout=5).status_code == 403
    # virtual-hosted style: BUCKET.localhost (signed as a client sends it to that name)
    port = url.rsplit(":", 1)[1]
    req = AWSRequest(method="PUT", url=f"{url}/via-host", data=b"vh",
                     headers={"Host": f"private.localhost:{port}",
                              "x-amz-content-sha256": hashlib.sha256(b"vh").hexdigest()})
    SigV4Auth(Credentials("ADMINKEY", "adminsecret"), "s3", "us-east-1").add_auth(req)
    r = requests.put(req.url, data=b"vh", headers=dict(req.headers), timeout=5)
    assert r.status_code == 200, r.text
    assert admin.get_object(Bucket="private", Key="via-host")["Body"].read() == b"vh"


def test_s3cmd_and_rclone(start, tmp_path):
    p, url, _ = start_s3(start, tmp_path)
    ak, sk = creds(tmp_path / "data")
    hostport = url[len("http://"):]
    cfg = tmp_path / "s3cfg"
    cfg.write_text(f"[default]\naccess_key = {ak}\nsecret_key = {sk}\nhost_base = {hostport}\n"
                   f"host_bucket = {hostport}\nuse_https = False\nsignature_v2 = False\n")
    s3cmd = ["s3cmd", "-c", str(cfg)]
    (tmp_path / "f1.txt").write_text("one\n")
    for args in (["mb", "s3://tools"], ["put", str(tmp_path / "f1.txt"), "s3://tools/f1.txt"],
                 ["get", "--force", "s3://tools/f1.txt", str(tmp_path / "f1.back")]):
        r = subprocess.run(s3cmd + args, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "f1.back").read_text() == "one\n"
    assert "s3://tools/f1.txt" in subprocess.run(s3cmd + ["ls", "s3://tools"], capture_output=True,
                                                  text=True, timeout=60).stdout
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        (src / "sub" / f"file{i}").write_bytes(os.urandom(1000 * (i + 1)))
    rc = tmp_path / "rclone.conf"
    rc.write_text(f"[c]\ntype = s3\nprovider = Other\naccess_key_id = {ak}\nsecret_access_key = {sk}\n"
                  f"endpoint = {url}\nregion = us-east-1\n")
    # rclone's AWS SDK refuses an AWS_CA_BUNDLE with its own transport (the endpoint is http)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    r = subprocess.run(["rclone", "--config", str(rc), "sync", str(src), "c:tools/tree"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["rclone", "--config", str(rc), "check", str(src), "c:tools/tree"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr


def test_acknowledged_puts_survive_kill_9(start, tmp_path):
    port = free_port()
    p, url, stack = start_s3(start, tmp_path, port=port)
    ak, sk = creds(tmp_path / "data")
    c = client(url, ak, sk)
    c.create_bucket(Bucket="crash")
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n):
        cl = client(url, ak, sk)
        i = 0
        while not stop.is_set():
            key = f"w{n}/{i}"
            body = os.urandom(random.choice([100, 70000, 300000]))
            try:
                cl.put_object(Bucket="crash", Key=key, Body=body)
            except Exception:
                return
            with lock:
                acked[key] = body
            i += 1
    def multipart(n):
        cl = client(url, ak, sk)
        i = 0
        while not stop.is_set():
            key = f"mp{n}/{i}"
            parts = [os.urandom(5 << 20), os.urandom(random.choice([10, 300000]))]
            try:
                up = cl.create_multipart_upload(Bucket="crash", Key=key)["UploadId"]
                etags = [cl.upload_part(Bucket="crash", Key=key, UploadId=up, PartNumber=j + 1,
                                        Body=b)["ETag"] for j, b in enumerate(parts)]
                cl.complete_multipart_upload(Bucket="crash", Key=key, UploadId=up, MultipartUpload={
                    "Parts": [{"PartNumber": j + 1, "ETag": e} for j, e in enumerate(etags)]})
            except Exception:
                return
            with lock:
                acked[key] = b"".join(parts)
            i += 1
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + \
        [threading.Thread(target=multipart, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 20 and any(k.startswith("mp") for k in acked), timeout=60,
             what="some acknowledged writes and multipart completes")
    os.kill(p.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(p.pid), timeout=5, what="the process to die")
    stop.set()
    for t in threads:
        t.join(timeout=30)
    p2 = start(["run", "s3", "-c", stack], name="again")
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, what="s3 ready again")
    for key, body in acked.items():
        assert c.get_object(Bucket="crash", Key=key)["Body"].read() == body, key
    # nothing half there: every listed object reads back whole, and no data file is unreferenced
    listed = [o for page in c.get_paginator("list_objects_v2").paginate(Bucket="crash")
              for o in page.get("Contents", [])]
    for o in listed:
        assert len(c.get_object(Bucket="crash", Key=o["Key"])["Body"].read()) == o["Size"]
    # every data file is an object's or a part of an upload still open (no leak)
    expected = 0
    for o in listed:
        h = c.head_object(Bucket="crash", Key=o["Key"], PartNumber=1)
        expected += int(h.get("PartsCount", 1))
    for u in c.list_multipart_uploads(Bucket="crash").get("Uploads", []):
        expected += len(c.list_parts(Bucket="crash", Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []))
    files = [f for _, _, fs in os.walk(tmp_path / "data" / "s3" / "data") for f in fs]
    assert len(files) == expected
    assert p2.pid != p.pid


def test_bit_rot_is_an_error_not_wrong_bytes(start, tmp_path):
    p, url, _ = start_s3(start, tmp_path)
    ak, sk = creds(tmp_path / "data")
    c = client(url, ak, sk)
    c.create_bucket(Bucket="rot")
    body = os.urandom(300000)
    c.put_object(Bucket="rot", Key="obj", Body=body)
    [path] = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "data" / "s3" / "data") for f in fs]
    with open(path, "r+b") as f:
        f.seek(200000)
        b = f.read(1)
        f.seek(200000)
        f.write(bytes([b[0] ^ 0xff]))
    # the first 3 blocks are good and served; the bad one cuts the answer short
    assert c.get_object(Bucket="rot", Key="obj", Range="bytes=0-9999")["Body"].read() == body[:10000]
    with pytest.raises(botocore.exceptions.BotoCoreError):
        c.get_object(Bucket="rot", Key="obj", Range="bytes=196608-262143")["Body"].read()
    wait_for(lambda: "corrupt" in p.stderr(), timeout=5, what="the corruption to be logged")


def test_versioning_tags_cors_and_lifecycle(start, tmp_path):
    p, url, stack = start_s3(start, tmp_path, "    public_buckets: [web]\n")
    ak, sk = creds(tmp_path / "data")
    c = client(url, ak, sk)
    c.create_bucket(Bucket="ver")
    c.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Enabled"})
    assert c.get_bucket_versioning(Bucket="ver")["Status"] == "Enabled"
    v1 = c.put_object(Bucket="ver", Key="doc", Body=b"one")["VersionId"]
    v2 = c.put_object(Bucket="ver", Key="doc", Body=b"two")["VersionId"]
    assert v1 != v2
    assert c.get_object(Bucket="ver", Key="doc")["Body"].read() == b"two"
    assert c.get_object(Bucket="ver", Key="doc", VersionId=v1)["Body"].read() == b"one"
    d = c.delete_object(Bucket="ver", Key="doc")
    assert d["DeleteMarker"] is True
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.get_object(Bucket="ver", Key="doc")
    assert code(e) == "NoSuchKey"
    lv = c.list_object_versions(Bucket="ver")
    assert [x["VersionId"] for x in lv["Versions"]] == [v2, v1]
    assert lv["DeleteMarkers"][0]["IsLatest"] is True
    # removing the marker brings the last version back
    c.delete_object(Bucket="ver", Key="doc", VersionId=d["VersionId"])
    assert c.get_object(Bucket="ver", Key="doc")["Body"].read() == b"two"
    c.delete_object(Bucket="ver", Key="doc", VersionId=v2)
    assert c.get_object(Bucket="ver", Key="doc")["Body"].read() == b"one"
    # suspended: writes replace the null version
    c.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Suspended"})
    c.put_object(Bucket="ver", Key="doc", Body=b"three")
    c.put_object(Bucket="ver", Key="doc", Body=b"four")
    ids = [x["VersionId"] for x in c.list_object_versions(Bucket="ver")["Versions"]]
    assert ids == ["null", v1]

    # tags
    c.put_object(Bucket="ver", Key="tagged", Body=b"t", Tagging="team=a&tier=gold")
    assert c.head_object(Bucket="ver", Key="tagged")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    c.put_object_tagging(Bucket="ver", Key="tagged", Tagging={"TagSet": [{"Key": "z", "Value": "1"},
                                                                         {"Key": "a", "Value": "2"}]})
    assert c.get_object_tagging(Bucket="ver", Key="tagged")["TagSet"] == [{"Key": "a", "Value": "2"},
                                                                          {"Key": "z", "Value": "1"}]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.put_object_tagging(Bucket="ver", Key="tagged", Tagging={"TagSet": [
            {"Key": f"k{i}", "Value": "v"} for i in range(11)]})
    assert code(e) == "InvalidTag"

    # CORS: a browser's preflight, then the answer's headers
    c.create_bucket(Bucket="web")
    c.put_object(Bucket="web", Key="page.html", Body=b"<p>")
    r = requests.options(url + "/web/page.html", headers={"Origin": "https://app.example",
                                                           "Access-Control-Request-Method": "PUT"}, timeout=5)
    assert r.status_code == 403       # no configuration yet
    c.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["https://*.example"], "AllowedMethods": ["GET", "PUT"],
         "AllowedHeaders": ["content-type"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600}]})
    r = requests.options(url + "/web/page.html", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type"}, timeout=5)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert r.headers["Access-Control-Max-Age"] == "600"
    r = requests.options(url + "/web/page.html", headers={"Origin": "https://evil.test",
                                                           "Access-Control-Request-Method": "PUT"}, timeout=5)
    assert r.status_code == 403
    r = requests.get(url + "/web/page.html", headers={"Origin": "https://app.example"}, timeout=5)
    assert r.status_code == 200 and r.headers["Access-Control-Expose-Headers"] == "ETag"

    # lifecycle: validated, announced on PUT, applied by the sweep (at start)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.put_bucket_lifecycle_configuration(Bucket="web", LifecycleConfiguration={"Rules": [
            {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 0}}]})
    assert code(e) == "InvalidArgument"
    c.put_bucket_lifecycle_configuration(Bucket="web", LifecycleConfiguration={"Rules": [
        {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}},
        {"ID": "old", "Status": "Enabled", "Filter": {"Prefix": "old/"},
         "Expiration": {"Date": "2020-01-01T00:00:00Z"}}]})
    r = c.put_object(Bucket="web", Key="tmp/x", Body=b"x")
    assert 'rule-id="tmp"' in r["Expiration"]
    c.put_object(Bucket="web", Key="old/y", Body=b"y")
    p.signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    start(["run", "s3", "-c", stack], name="again")
    wait_for(lambda: requests.get(url + "/-/ready", timeout=1).status_code == 200, what="s3 ready again")

    def gone():
        try:
            c.head_object(Bucket="web", Key="old/y")
            return False
        except botocore.exceptions.ClientError:
            return True
    wait_for(gone, timeout=10, what="the lifecycle sweep")
    assert c.get_object(Bucket="web", Key="tmp/x")["Body"].read() == b"x"


def test_full_disk_is_an_error_and_loses_nothing(start, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small file system")
    try:
        p, url, _ = start_s3(start, tmp_path)
        ak, sk = creds(data)
        c = client(url, ak, sk)
        c.create_bucket(Bucket="full")
        stored, failures = {}, []
        for i in range(40):
            body = os.urandom(300000)
            try:
                c.put_object(Bucket="full", Key=f"o{i}", Body=body)
                stored[f"o{i}"] = body
            except botocore.exceptions.ClientError as e:
                failures.append(e.response)
        assert failures and len(stored) >= 5
        assert failures[0]["Error"]["Code"] == "InsufficientStorage"
        assert failures[0]["ResponseMetadata"]["HTTPStatusCode"] == 507
        for k, body in stored.items():
            assert c.get_object(Bucket="full", Key=k)["Body"].read() == body
        listed = [o["Key"] for o in c.list_objects_v2(Bucket="full").get("Contents", [])]
        assert sorted(listed) == sorted(stored)
        files = [f for _, _, fs in os.walk(data / "s3" / "data") for f in fs]
        assert len(files) == len(stored)        # the refused writes left nothing behind
        # room again: writes work again
        for k in list(stored)[:3]:
            c.delete_object(Bucket="full", Key=k)
        c.put_object(Bucket="full", Key="after", Body=b"fits")
        assert c.get_object(Bucket="full", Key="after")["Body"].read() == b"fits"
        p.signal(signal.SIGTERM)
        p.wait(timeout=10)
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_secrets_are_checked_with_their_place(tmp_path):
    from conftest import run_cairn
    stack = write_stack(tmp_path, """
data_dir: data
services:
  s3:
    role: s3
    listen: ["127.0.0.1:19000"]
    keys: [{access_key: AK1, secret_key: a, secret_key_env: B, grants: [{bucket: "*", actions: [read]}]}]
  registry:
    role: registry
    listen: ["127.0.0.1:15000"]
    users: [{name: ci, password_file: missing.pw, grants: [{repositories: "*", actions: [pull]}]}]
""")
    r = run_cairn(["check", "-c", stack])
    assert r.returncode != 0
    assert "services.s3.keys[0]: give exactly one of secret_key_file, secret_key_env, secret_key" in r.stderr
    assert 'services.registry.users[0].password_file: cannot read "missing.pw"' in r.stderr
