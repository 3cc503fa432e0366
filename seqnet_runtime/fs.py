"""Files written all or nothing, with the permissions the user's umask gives.

Every output of the toolkit (packages, run folders, indexes, checkpoints, reports, caches) is
written here: into a uniquely named temporary file or folder beside the target, flushed and
fsynced, then renamed over it, and the folder holding it fsynced. A reader sees the old
target or the new one, never a part; two writers of one target at once each finish whole,
and the last rename wins.
"""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from seqnet_runtime.errors import SeqNetError


def check_out(out, markers):
    """``out`` may be absent, empty, or an earlier output of ours (holding one of ``markers``):
    anything else is a user's folder we must not replace."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise SeqNetError(f"--out {out} exists and is not a folder")
    if any(out.iterdir()) and not any((out / m).exists() for m in markers):
        raise SeqNetError(f"--out {out} holds other files; choose a new or empty folder")


def umask():
    """The process's umask: from /proc on Linux (reading it elsewhere means setting it and
    putting it back, which races with another thread creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder):
    """Make a rename or a new entry in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path, mode="wb", encoding=None):
    """Yield an open file beside ``path``; when the block succeeds it is fsynced and renamed
    over ``path`` (0666 less the umask), when it fails it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp's file is private
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path, data):
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def write_text(path, text):
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json(path, obj, **dumps):
    """``obj`` as JSON (``dumps``: json.dumps options), ending with a newline."""
    return write_text(path, json.dumps(obj, **dumps) + "\n")


@contextlib.contextmanager
def atomic_dir(out):
    """Yield a new temporary folder beside ``out``; when the block succeeds it replaces ``out``
    (an earlier folder there is removed), when it fails it is removed and ``out`` is left as it
    was. Folders get 0777 less the umask."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        _replace_dir(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder):
    """Files and folders under ``folder`` durable, with the umask's permissions."""
    mask = umask()
    for root, _, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


def _replace_dir(tmp, out):
    """Rename ``tmp`` to ``out``, moving whatever is at ``out`` aside first (and removing it
    after). Another writer may move or fill ``out`` in between: then try again."""
    while True:
        try:
            os.rename(tmp, out)
            return
        except OSError as e:  # out is a folder that is not empty: move it aside
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        with contextlib.suppress(FileNotFoundError):  # another writer moved it first
            os.rename(out, old / out.name)
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path):
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
