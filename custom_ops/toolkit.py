"""Where a CUDA toolkit is: used by setup.py (before torch's build helpers guess) and the tests.

torch's ``cpp_extension`` takes the folder above ``which nvcc`` as the toolkit; where nvcc is a
wrapper script (``/usr/local/bin/nvcc`` on these machines) that folder has no CUDA headers.
A toolkit here is a folder with ``bin/nvcc`` and ``include/cuda_runtime.h``: ``CUDA_HOME`` or
``CUDA_PATH``, the folder above nvcc, ``/usr/local/cuda``, or the pip packages
(``nvidia-cuda-nvcc``, ``nvidia-cuda-runtime``, ``nvidia-cuda-crt``, ``nvidia-cuda-cccl``: CUDA
13 puts them all in ``site-packages/nvidia/cu13``). No torch import: setup.py runs this first.
"""

import os
import shutil
import site
import sys
from pathlib import Path


def _candidates():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            yield Path(os.environ[var])
    nvcc = shutil.which("nvcc")
    if nvcc:
        yield Path(nvcc).resolve().parent.parent
    yield Path("/usr/local/cuda")
    for root in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        nvidia = Path(root) / "nvidia"
        if nvidia.is_dir():
            yield from sorted(nvidia.glob("cu*"), reverse=True)


def _is_toolkit(path):
    include = [path / "include", path / "targets" / "x86_64-linux" / "include"]
    return (path / "bin" / "nvcc").is_file() and any(
        (d / "cuda_runtime.h").is_file() for d in include
    )


def find_cuda_home():
    """The first complete CUDA toolkit found, or None."""
    seen = set()
    for path in _candidates():
        if path in seen:
            continue
        seen.add(path)
        if _is_toolkit(path):
            return path
    return None
