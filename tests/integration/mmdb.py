"""Writes a MaxMind DB (format 2.0) for tests, from the published specification
(https://maxmind.github.io/MaxMind-DB/): an IPv6 search tree with 24-bit records
(IPv4 networks under ::/96, where libmaxminddb looks IPv4 addresses up), a data
section of maps and strings, and the metadata map after the marker. Debian's
mmdblookup reads what this writes (the test checks it)."""
import ipaddress
import struct
import time


def _ctrl(type_, size):
    """Control byte(s) for a type and payload size."""
    ext = b""
    if type_ > 7:
        ext = bytes([type_ - 7])
        type_ = 0
    if size < 29:
        return bytes([type_ << 5 | size]) + ext
    if size < 29 + 256:
        return bytes([type_ << 5 | 29]) + ext + bytes([size - 29])
    if size < 285 + 65536:
        return bytes([type_ << 5 | 30]) + ext + struct.pack(">H", size - 285)
    return bytes([type_ << 5 | 31]) + ext + struct.pack(">I", size - 65821)[1:]


def encode(v):
    if isinstance(v, str):
        b = v.encode()
        return _ctrl(2, len(b)) + b
    if isinstance(v, dict):
        out = _ctrl(7, len(v))
        for k, x in v.items():
            out += encode(k) + encode(x)
        return out
    if isinstance(v, list):
        return _ctrl(11, len(v)) + b"".join(encode(x) for x in v)
    if isinstance(v, tuple) and v[0] == "u16":
        b = struct.pack(">H", v[1]).lstrip(b"\0")
        return _ctrl(5, len(b)) + b
    if isinstance(v, tuple) and v[0] == "u32":
        b = struct.pack(">I", v[1]).lstrip(b"\0")
        return _ctrl(6, len(b)) + b
    if isinstance(v, tuple) and v[0] == "u64":
        b = struct.pack(">Q", v[1]).lstrip(b"\0")
        return _ctrl(9, len(b)) + b
    raise TypeError(v)


def write(path, networks):
    """networks: [("10.1.0.0/16", {"country": {"iso_code": "DE"}, ...}), ...]"""
    data = b""
    offsets = []
    for _net, rec in networks:
        offsets.append(len(data))
        data += encode(rec)
    # a binary trie over 128-bit keys: node = [left, right]; leaf = ("data", i)
    root = [None, None]
    for i, (net, _rec) in enumerate(networks):
        n = ipaddress.ip_network(net)
        if n.version == 4:
            bits, plen = int(n.network_address), 96 + n.prefixlen
        else:
            bits, plen = int(n.network_address), n.prefixlen
        node = root
        for d in range(plen - 1):
            b = (bits >> (127 - d)) & 1
            if not isinstance(node[b], list):
                node[b] = [None, None]
            node = node[b]
        node[(bits >> (127 - (plen - 1))) & 1] = ("data", i)
    # number the nodes breadth-first
    order, queue = [], [root]
    while queue:
        nd = queue.pop(0)
        order.append(nd)
        queue.extend(x for x in nd if isinstance(x, list))
    index = {id(nd): i for i, nd in enumerate(order)}
    count = len(order)
    tree = b""
    for nd in order:
        for x in nd:
            if x is None:
                rec = count                        # no data
            elif isinstance(x, list):
                rec = index[id(x)]
            else:
                rec = count + 16 + offsets[x[1]]   # into the data section
            tree += struct.pack(">I", rec)[1:]
    meta = encode({
        "node_count": ("u32", count), "record_size": ("u16", 24), "ip_version": ("u16", 6),
        "database_type": "cairn-test-country", "languages": ["en"],
        "binary_format_major_version": ("u16", 2), "binary_format_minor_version": ("u16", 0),
        "build_epoch": ("u64", int(time.time())), "description": {"en": "cairn test database"},
    })
    with open(path, "wb") as f:
        f.write(tree + b"\0" * 16 + data + b"\xab\xcd\xefMaxMind.com" + meta)
