"""A streaming, vectorised reader for large MAT v5 struct arrays (the CUHK-SYSU protocols).

``scipy.io.loadmat`` builds Python objects for every field of every gallery entry: TestG4000
(2,900 queries x 4,000 entries) takes minutes and >10 GB. Here the top-level struct array is
streamed one element at a time (through zlib for compressed variables) and each nested struct
array's fields are located and decoded with numpy, so memory stays at one element's bytes.
Format: MathWorks, "MAT-File Format" (MAT v5), little-endian files only.
"""

import struct
import zlib

import numpy as np

from seqnet_train.errors import SeqNetError

MI_MATRIX, MI_COMPRESSED = 14, 15
MX_STRUCT, MX_CHAR = 2, 4
# MAT data types -> numpy dtypes (16 = UTF-8, read as bytes: protocol strings are ASCII)
_DTYPES = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 9: "<f8",
           12: "<i8", 13: "<u8", 16: "u1", 17: "<u2", 18: "<u4"}  # fmt: skip


def _pad8(n):
    return (n + 7) // 8 * 8


class _Stream:
    """Sequential reads from an open file, or from the zlib stream of one compressed element."""

    def __init__(self, f, compressed_len=None):
        self.f, self.left = f, compressed_len
        self.z = None if compressed_len is None else zlib.decompressobj()
        self.buf, self.pos = bytearray(), 0

    def read(self, n):
        if self.z is None:
            data = self.f.read(n)
            if len(data) < n:
                raise EOFError
            return data
        while len(self.buf) - self.pos < n:
            if self.left <= 0:
                raise EOFError
            chunk = self.f.read(min(self.left, 1 << 20))
            if not chunk:
                raise EOFError
            self.left -= len(chunk)
            del self.buf[: self.pos]
            self.pos = 0
            self.buf += self.z.decompress(chunk)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out


class _Bytes:
    """The ``_Stream`` interface over bytes already in memory."""

    def __init__(self, data, pos=0):
        self.data, self.pos = data, pos

    def read(self, n):
        if self.pos + n > len(self.data):
            raise EOFError
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _element(src):
    """(data type, payload bytes) of one data element, small (<= 4 bytes) or regular format."""
    w0, w1 = struct.unpack("<II", src.read(8))
    if w0 >> 16:
        return w0 & 0xFFFF, struct.pack("<I", w1)[: w0 >> 16]
    return w0, src.read(_pad8(w1))[:w1]


def _header(src):
    """(class, dims, name) of a matrix whose tag was just read."""
    typ, flags = _element(src)
    if typ != 6 or len(flags) != 8:
        raise ValueError("bad array flags")
    typ, dims = _element(src)
    if typ != 5:
        raise ValueError("bad dimensions")
    _, name = _element(src)
    return flags[0], np.frombuffer(dims, "<i4"), name.decode("ascii")


def _field_names(src):
    _, size = _element(src)
    _, names = _element(src)
    width = struct.unpack("<i", size)[0]
    return [
        names[i : i + width].split(b"\0")[0].decode("ascii") for i in range(0, len(names), width)
    ]


def iter_struct(path, var):
    """Yield, for each element of the struct array ``var`` (column-major), {field: matrix bytes}.

    The matrix bytes (everything after the element tag) are decoded with ``decode_struct``.
    """
    try:
        with open(path, "rb") as f:
            if f.read(128)[126:128] != b"IM":
                raise SeqNetError(f"{path}: expected a little-endian MAT v5 file")
            while True:
                tag = f.read(8)
                if len(tag) < 8:
                    raise SeqNetError(f"{path}: expected a variable {var!r}")
                typ, n = struct.unpack("<II", tag)
                end = f.tell() + n
                src = _Stream(f, n) if typ == MI_COMPRESSED else _Stream(f)
                if typ == MI_COMPRESSED:
                    typ, _ = struct.unpack("<II", src.read(8))
                cls, dims, name = _header(src) if typ == MI_MATRIX else (0, (), "")
                if name == var:
                    break
                f.seek(end)
            if cls != MX_STRUCT:
                raise SeqNetError(f"{path}: expected {var!r} to be a struct array")
            fields = _field_names(src)
            for _ in range(int(np.prod(dims))):
                row = {}
                for field in fields:
                    typ, n = struct.unpack("<II", src.read(8))
                    if typ != MI_MATRIX:
                        raise ValueError("struct field is not a matrix")
                    row[field] = src.read(n)
                yield row
    except (EOFError, ValueError, zlib.error, UnicodeDecodeError) as e:
        raise SeqNetError(
            f"{path}: unexpected MAT structure in {var!r} ({e or 'truncated'})"
        ) from None


def _child_offsets(body, first, count):
    """Offsets of ``count`` consecutive matrix elements starting at ``first`` in ``body``.

    Candidates are 8-aligned words that look like a matrix tag followed by its array-flags tag;
    they are accepted when they chain exactly (each ends where the next starts), else the chain
    is walked one element at a time.
    """
    u = np.frombuffer(body, "<u4", count=len(body) // 4)
    k = np.arange(first // 4, len(u) - 3, 2)
    cand = k[(u[k] == MI_MATRIX) & (u[k + 2] == 6) & (u[k + 3] == 8)]
    starts = cand.astype(np.int64) * 4
    ends = starts + 8 + u[cand + 1]
    bounded = count == 0 or (len(starts) > 0 and starts[0] == first and ends[-1] <= len(body))
    if len(starts) == count and bounded and np.array_equal(starts[1:], ends[:-1]):
        return starts
    starts, pos = [], first
    for _ in range(count):
        if pos + 8 > len(body) or u[pos // 4] != MI_MATRIX:
            raise ValueError("struct fields do not chain")
        starts.append(pos)
        pos += 8 + int(u[pos // 4 + 1])
    return np.array(starts, dtype=np.int64)


class Column:
    """One field of a decoded struct array: where each element's data lies in the bytes."""

    def __init__(self, body, starts):
        u = np.frombuffer(body, "<u4", count=len(body) // 4)
        w = lambda off: u[off // 4].astype(np.int64)  # noqa: E731
        if np.any(w(starts + 24) != 5) or np.any(w(starts + 28) != 8):
            raise ValueError("field values must be 2-D matrices")
        self.body, self.cls = body, w(starts + 16) & 0xFF
        self.size = w(starts + 32) * w(starts + 36)
        name = starts + 40
        small = (w(name) >> 16) != 0
        data = name + np.where(small, 8, 8 + (w(name + 4) + 7) // 8 * 8)
        small = (w(data) >> 16) != 0
        self.dtype = np.where(small, w(data) & 0xFFFF, w(data))
        self.nbytes = np.where(small, w(data) >> 16, w(data + 4))
        self.offset = data + np.where(small, 4, 8)

    def _groups(self):
        """Yield (element indices, values (m, k)) for each distinct (data type, byte count)."""
        b = np.frombuffer(self.body, np.uint8)
        keys = self.dtype * (1 << 32) + self.nbytes
        for key in np.unique(keys):
            idx = np.flatnonzero(keys == key)
            code, nbytes = divmod(int(key), 1 << 32)
            if code not in _DTYPES:
                raise ValueError(f"unsupported MAT data type {code}")
            raw = b[self.offset[idx, None] + np.arange(nbytes)]
            yield idx, np.ascontiguousarray(raw).view(_DTYPES[code])

    def strings(self):
        """The char values as a numpy unicode array (one per element)."""
        if np.any(self.cls != MX_CHAR):
            raise ValueError("expected char values")
        out = np.empty(len(self.cls), dtype=object)
        for idx, vals in self._groups():
            chars = np.ascontiguousarray(vals.astype(np.uint32))
            out[idx] = list(chars.view(f"U{chars.shape[1]}")[:, 0]) if chars.shape[1] else ""
        return out.astype(str)

    def numbers(self, width):
        """The numeric values as float64 (n, width); NaN rows for empty (1x0) values."""
        if np.any((self.size != width) & (self.size != 0)):
            raise ValueError(f"expected numeric values of {width} elements or empty")
        out = np.full((len(self.cls), width), np.nan)
        for idx, vals in self._groups():
            if vals.shape[1] == width:
                out[idx] = vals
        return out


def decode_struct(body):
    """{field: Column} for the struct array matrix ``body`` (bytes after its tag)."""
    src = _Bytes(body)
    cls, dims, _ = _header(src)
    if cls != MX_STRUCT:
        raise ValueError("expected a struct array")
    fields = _field_names(src)
    starts = _child_offsets(body, src.pos, int(np.prod(dims)) * len(fields))
    return {f: Column(body, starts[i :: len(fields)]) for i, f in enumerate(fields)}
