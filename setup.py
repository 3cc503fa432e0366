"""Build script: the metadata lives in pyproject.toml; this file builds custom_ops' kernels.

- ``custom_ops._C``: the C++ CPU kernels (RoIAlign, NMS, TopK + NMS), built whenever torch can
  be imported by this script, i.e. with ``pip install --no-build-isolation`` (the Makefile's
  way): an isolated build environment has no torch, and one downloaded for it would not be
  the one the extension must match.
- ``custom_ops._C_cuda``: the CUDA kernels, when torch is a CUDA build and a CUDA toolkit is
  found (``custom_ops/toolkit.py``). Without a visible GPU it is built for
  ``TORCH_CUDA_ARCH_LIST`` (default below).

A build that fails, or cannot run, never fails the install: it warns and the package runs on
torchvision's kernels (``custom_ops`` says which it uses, once, when the model first needs it).
Environment: ``SEQNET_BUILD_OPS=0`` builds nothing, ``SEQNET_BUILD_CUDA=0`` no CUDA kernels;
``MAX_JOBS`` caps parallel compiler processes.
"""

import importlib.util
import os
import sys
import warnings
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = Path("custom_ops") / "csrc"  # relative: setuptools wants relative source paths
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"  # A100 and H100/H200 code; PTX for newer GPUs
CXX_FLAGS = [
    "-O3",
    "-g0",  # no debug info: Python's flags ask for it, and it doubles the compile time
    # No fused multiply-add: the kernels reproduce torchvision's sums to the bit. No -march:
    # the vector loops are portable (SSE2 on x86-64) and the build may be distributed.
    "-ffp-contract=off",
    "-fopenmp",  # at::parallel_for is OpenMP in torch's CPU builds (one runtime: libgomp.so.1)
]


def _warn(message):
    warnings.warn(f"custom_ops: {message}", stacklevel=2)
    print(f"WARNING custom_ops: {message}", file=sys.stderr)


def _toolkit():
    spec = importlib.util.spec_from_file_location("_toolkit", ROOT / "custom_ops" / "toolkit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find_cuda_home()


def _extensions():
    """(ext_modules, cmdclass); empty when nothing can or should be built."""
    if os.environ.get("SEQNET_BUILD_OPS", "1") == "0":
        return [], {}
    cuda_home = _toolkit() if os.environ.get("SEQNET_BUILD_CUDA", "1") != "0" else None
    if cuda_home and not os.environ.get("CUDA_HOME"):
        os.environ["CUDA_HOME"] = str(cuda_home)  # read when cpp_extension is imported
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as e:  # noqa: BLE001 - any failure means: no kernels, still an install
        _warn(
            f"kernels not built: torch is not importable here ({e}); install with "
            "`pip install --no-build-isolation -e .` after torch to build them"
        )
        return [], {}

    class BuildExt(cpp_extension.BuildExtension):
        """Each extension optional: a failure warns, removes stale output and goes on. Objects
        go to build/custom_ops, not a fresh temporary folder: a second install (the Makefile
        has two) recompiles only what changed."""

        def build_extensions(self):
            self.build_temp = str(ROOT / "build" / "custom_ops")
            try:
                super().build_extensions()  # torch checks the compiler first, then each one
            except Exception as e:  # noqa: BLE001
                for ext in self.extensions:
                    Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
                self.extensions = []
                _warn(
                    f"custom_ops._C not built ({type(e).__name__}: {e}); torchvision's "
                    "kernels will be used instead"
                )

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as e:  # noqa: BLE001
                stale = Path(self.get_ext_fullpath(ext.name))
                stale.unlink(missing_ok=True)
                _warn(
                    f"{ext.name} not built ({type(e).__name__}: {e}); torchvision's kernels "
                    "will be used instead"
                )

    include = [str(ROOT / CSRC)]
    cpu = cpp_extension.CppExtension(
        "custom_ops._C",
        [str(CSRC / f) for f in ("ops.cpp", "roi_align_cpu.cpp", "nms_cpu.cpp")],
        include_dirs=include,
        extra_compile_args={"cxx": CXX_FLAGS},
        extra_link_args=["-fopenmp"],
    )
    cpu.optional = True
    extensions = [cpu]
    if cuda_home and torch.version.cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.device_count():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        cuda = cpp_extension.CUDAExtension(
            "custom_ops._C_cuda",
            [str(CSRC / "cuda" / f) for f in ("module.cpp", "roi_align.cu", "nms.cu")],
            include_dirs=include,
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
        )
        cuda.optional = True
        extensions.append(cuda)
    elif os.environ.get("SEQNET_BUILD_CUDA", "1") != "0":
        reason = "torch is a CPU-only build" if cuda_home else "no CUDA toolkit found"
        print(f"custom_ops: CUDA kernels not built ({reason})", file=sys.stderr)
    return extensions, {"build_ext": BuildExt}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
