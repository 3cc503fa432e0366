"""All-or-nothing outputs: a folder is built under a temporary name and renamed when complete,
a file is written beside its target and moved over it (``os.replace``)."""

import contextlib
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


@contextlib.contextmanager
def staged_dir(out):
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, on any error
    it is removed and ``out`` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(old / out.name)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(path):
    """Yield an open binary file beside ``path``; on success it replaces ``path``, on any
    error it is removed, so ``path`` never holds a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
