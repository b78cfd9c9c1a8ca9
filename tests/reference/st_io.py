"""st_io.py - the few lines of file I/O the goldens need, with no dependency but the stdlib.

safetensors (moe-language.md section 7): 8-byte little-endian header length N, N bytes of
JSON header {"__metadata__": {...}, name: {"dtype": "F32", "shape": [...],
"data_offsets": [begin, end]}}, then the raw little-endian data; offsets are relative to
the start of the data. The header is padded with spaces to a multiple of 8 (as the HF
writer does) so that the data section starts aligned.
llm.c token file: 256 int32 (magic 20240520, version 1, token count, zeros), then uint16 tokens.
"""
import json
import struct
from array import array

TOKENS_MAGIC = 20240520


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, shape, flat list/array of float) in file order; stored as F32."""
    header = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blobs, off = [], 0
    for name, shape, values in tensors:
        a = array("f", values)
        n = 1
        for s in shape:
            n *= s
        assert len(a) == n, (name, shape, len(a))
        b = a.tobytes() if struct.pack("=f", 1.0) == struct.pack("<f", 1.0) else _swap(a)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def _swap(a):
    a = array("f", a)
    a.byteswap()
    return a.tobytes()


def read_safetensors(path):
    """Returns (dict name -> (shape, array('f')), metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", name
        b, e = t["data_offsets"]
        a = array("f")
        a.frombytes(data[b:e])
        if struct.pack("=f", 1.0) != struct.pack("<f", 1.0):
            a.byteswap()
        out[name] = (tuple(t["shape"]), a)
    return out, meta


def write_tokens(path, tokens):
    head = array("i", [0] * 256)
    head[0], head[1], head[2] = TOKENS_MAGIC, 1, len(tokens)
    body = array("H", tokens)
    if struct.pack("=i", 1) != struct.pack("<i", 1):
        head.byteswap()
        body.byteswap()
    with open(path, "wb") as f:
        f.write(head.tobytes())
        f.write(body.tobytes())


def read_tokens(path):
    with open(path, "rb") as f:
        raw = f.read()
    head = array("i")
    head.frombytes(raw[:1024])
    body = array("H")
    body.frombytes(raw[1024:])
    if struct.pack("=i", 1) != struct.pack("<i", 1):
        head.byteswap()
        body.byteswap()
    assert head[0] == TOKENS_MAGIC and head[1] == 1 and head[2] == len(body), path
    return list(body)
