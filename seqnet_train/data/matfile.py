"""``scipy.io.loadmat`` with the checks every loader needs: a missing file or an unexpected
structure becomes one ``SeqNetError`` line naming the file and what was expected."""

from pathlib import Path

import numpy as np
import scipy.io

from seqnet_train.errors import SeqNetError


def require_file(path, what):
    """``path`` as a Path, or a SeqNetError saying which file (``what``) is missing."""
    path = Path(path)
    if not path.is_file():
        raise SeqNetError(f"{path}: {what} not found")
    return path


def load_var(path, names, what):
    """The first of the variables ``names`` present in the .mat file at ``path``."""
    path = require_file(path, what)
    try:
        data = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises many types for a corrupt file
        raise SeqNetError(f"{path}: not a readable MAT file ({e})") from None
    for name in names:
        if name in data:
            return data[name]
    found = sorted(k for k in data if not k.startswith("__"))
    raise SeqNetError(f"{path}: expected a variable {' or '.join(names)}, found {found}")


def expect_fields(arr, fields, path, what):
    """Check that ``arr`` is a struct array carrying ``fields``, else a SeqNetError."""
    names = getattr(getattr(arr, "dtype", None), "names", None) or ()
    missing = [f for f in fields if f not in names]
    if missing:
        raise SeqNetError(f"{path}: expected {what} to be a struct with fields {list(fields)}")


def mat_str(x, path, what):
    """A MATLAB char row (``array(['s1.jpg'])``, possibly wrapped in cells) as ``str``."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.item()
    if isinstance(x, np.ndarray) and x.dtype.kind == "U" and x.size == 1:
        return str(x.item())
    if isinstance(x, str):
        return x
    raise SeqNetError(f"{path}: expected {what} to be a string, got {type(x).__name__}")


def mat_strings(cell, path, what):
    """A cell array of char rows (e.g. ``pool``, ``img_index_test``) as a list of ``str``."""
    if not isinstance(cell, np.ndarray) or cell.dtype != object:
        raise SeqNetError(f"{path}: expected {what} to be a cell array of strings")
    return [mat_str(x, path, what) for x in cell.ravel(order="F")]
