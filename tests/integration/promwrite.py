"""A Prometheus remote_write client for tests: the protobuf WriteRequest encoded by
hand, framed in snappy's block format with literal elements only (valid, just not
compressed), so no Python package beyond requests is needed."""
import struct

import requests

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def ld(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def write_request(series):
    """series: [(labels dict, [(ts_ms, value), ...]), ...]"""
    out = b""
    for labels, samples in series:
        ts = b""
        for k in sorted(labels):
            ts += ld(1, ld(1, k.encode()) + ld(2, labels[k].encode()))
        for t, v in samples:
            ts += ld(2, varint(1 << 3 | 1) + struct.pack("<d", v) + varint(2 << 3) +
                     varint(t & ((1 << 64) - 1)))
        out += ld(1, ts)
    return out


def snappy(data):
    out = varint(len(data))
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out += bytes([n << 2])
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + struct.pack("<H", n)
        out += chunk
    return out


def push_url(base, series, timeout=10):
    return requests.post(base.rstrip("/") + "/api/v1/write", data=snappy(write_request(series)),
                         headers={"Content-Type": "application/x-protobuf",
                                  "Content-Encoding": "snappy",
                                  "X-Prometheus-Remote-Write-Version": "0.1.0"}, timeout=timeout)


def push(port, series, timeout=10):
    return push_url(f"http://127.0.0.1:{port}", series, timeout)
