"""``make gpu-check``: everything in the toolkit that only a GPU can prove, as one prepared run
(../shared/DEPLOY.md, GPU) that fits 10 minutes on a machine with CUDA, nvcc and PyTorch and no
internet. Nothing is installed: it uses the Python it runs on.

Steps, each reported as ran / failed / could not run (with why):
1. the machine: torch and its CUDA, the GPU, the CUDA toolkit custom_ops would build with;
2. build: ``setup.py build_ext --inplace`` compiles custom_ops' CPU and CUDA kernels for this GPU;
3. tests: the tests marked ``cuda``, which prove the GPU path: tests/test_custom_ops.py, whose
   CUDA cases compare the kernels with torchvision's CUDA ones (forward, backward, NMS), the
   golden parity cases on CUDA (tests/test_parity.py; the largest differences go to
   OUT/parity_cuda.json) and the CUDA-graph replay of the backbone (tests/test_inference.py);
4. tensorrt: where a TensorRT that builds for this GPU is installed (full TensorRT 10/11, or
   TensorRT-RTX for sm75-sm121; not the H100/H200's sm90), the tests marked ``cuda`` of
   tests/test_tensorrt.py: engines built here from the engine graphs against the same graphs
   on ONNX Runtime (tiny package), and the golden model's engines against its fp32 graphs on
   ONNX Runtime on the golden images (fp32 at the fp32 tolerances, fp16 at the fp16 contract;
   the largest differences to OUT/tensorrt.json); else "not run" with the reason;
5. fps: the GPU rows of benchmarks/fps.py (PyTorch eager and fast path fp32 with TF32 off,
   fp16, fp16 with the backbone as CUDA graphs; ONNX Runtime where its CUDA provider is
   installed; TensorRT fp16 where step 4 could run), same frames, same run.

The repository need not be installed: its folder goes on PYTHONPATH. The golden weights are
read from ``SEQNET_SHARED``, else ../shared.

    python benchmarks/gpu_check.py [--out gpu_check_output]

Writes OUT/report.json (and fps.json, fps.png, the logs); exits 1 if a step failed and 2 if
there is no GPU to check (then nothing but step 1 ran).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_TESTS = ["tests/test_custom_ops.py", "tests/test_parity.py", "tests/test_inference.py"]


def machine():
    import torch

    sys.path.insert(0, str(ROOT))
    from custom_ops.toolkit import find_cuda_home

    home = find_cuda_home()
    gpu = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if gpu else None,
        "capability": ".".join(map(str, torch.cuda.get_device_capability())) if gpu else None,
        "cuda_toolkit": str(home) if home else None,
    }


PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def step(name, command, out, timeout, env=None):
    """Run ``command`` with its output in OUT/<name>.log; the step's report entry."""
    log = out / f"{name}.log"
    print(f"gpu-check: {name}: {' '.join(command)}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        with log.open("w") as f:
            code = subprocess.run(
                command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                env={**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})},
            ).returncode  # fmt: skip
    except subprocess.TimeoutExpired:
        code = "timeout"
    seconds = round(time.perf_counter() - t, 1)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    status = "ran" if code == 0 else "failed"
    return {"status": status, "exit": code, "seconds": seconds, "log": log.name, "tail": tail}


def tensorrt_unavailable():
    """Why the TensorRT rows cannot run here (one line), or None (seqnet_export.engine)."""
    probe = "from seqnet_export.engine import unavailable_here; print(unavailable_here() or '')"
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )  # fmt: skip
    if found.returncode:
        return f"the TensorRT check failed: {found.stderr.strip().splitlines()[-1:]}"
    return found.stdout.strip() or None


def tensorrt_step(out):
    """The tensorrt step: the cuda tests of tests/test_tensorrt.py, or "not run" and why."""
    why = tensorrt_unavailable()
    if why:
        return {"status": "not run", "why": why}
    tests = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "tests/test_tensorrt.py"]
    report = {"SEQNET_TENSORRT_REPORT": str(out / "tensorrt.json")}
    return step("tensorrt", tests, out, 420, env=report)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check_output", help="folder for the report")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "steps": {}}
    steps = report["steps"]
    if report["machine"]["gpu"] is None:
        reason = "no CUDA device visible to torch"
        for name in ("build", "tests", "tensorrt", "fps"):
            steps[name] = {"status": "could not run", "why": reason}
    else:
        if report["machine"]["cuda_toolkit"] is None:
            steps["build"] = {"status": "could not run", "why": "no CUDA toolkit (nvcc) found"}
        else:
            arch = {"TORCH_CUDA_ARCH_LIST": report["machine"]["capability"]}
            build = [sys.executable, "setup.py", "build_ext", "--inplace"]
            steps["build"] = step("build", build, out, 300, env=arch)
            probe = "import custom_ops, json; print(json.dumps(custom_ops.status()))"
            loaded = subprocess.run(
                [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": PYTHONPATH},
            )  # fmt: skip
            steps["build"]["custom_ops_status"] = loaded.stdout.strip() or loaded.stderr[-300:]
            if '"cuda": true' not in loaded.stdout:
                steps["build"]["status"] = "failed"
        try:
            import pytest  # noqa: F401

            tests = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", *GPU_TESTS]
            report_path = {"SEQNET_PARITY_REPORT": str(out / "parity_cuda.json")}
            steps["tests"] = step("tests", tests, out, 300, env=report_path)
        except ImportError:
            steps["tests"] = {"status": "could not run", "why": "pytest is not installed"}
        steps["tensorrt"] = tensorrt_step(out)
        fps = [
            sys.executable, "benchmarks/fps.py", "--device", "cuda", "--frames", "8",
            "--repeats", "3", "--json", str(out / "fps.json"), "--chart", str(out / "fps.png"),
        ]  # fmt: skip
        steps["fps"] = step("fps", fps, out, 300)
    text = json.dumps(report, indent=2)
    print(text)
    (out / "report.json").write_text(text + "\n")
    if report["machine"]["gpu"] is None:
        sys.exit(2)
    sys.exit(1 if any(s["status"] == "failed" for s in steps.values()) else 0)


if __name__ == "__main__":
    main()
