"""What a benchmark ran on, named alike in every benchmark's JSON."""

import os
import platform
import sys
from pathlib import Path

from seqnet_runtime.cpu import cpu_features


def cpu_name():
    """The CPU's model name (/proc/cpuinfo on Linux, where ``platform`` only says x86_64)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the SIMD flags that decide these networks' speed on a CPU (machines here differ in them);
# the reduced-precision units (AVX-512 VNNI/BF16, AMX) are among them
SIMD = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
        "amx_int8", "amx_bf16")  # fmt: skip


def bytecode():
    """Whether a new process finds the installed packages compiled. With PYTHONDONTWRITEBYTECODE
    set Python caches nothing it compiles, so unless pip compiled them at install, every new
    process (a Ray daemon or worker, a command) compiles what it imports again: seconds each."""
    import importlib.util

    import numpy

    if not sys.flags.dont_write_bytecode:
        return "cached by Python"
    compiled = Path(importlib.util.cache_from_source(numpy.__file__)).is_file()
    return "compiled at install" if compiled else "compiled by every process"


def describe():
    """The machine as every benchmark's JSON names it: CPU model, its SIMD flags, cores,
    Python and its bytecode."""
    return {
        "cpu": cpu_name(),
        "flags": list(cpu_features(names=SIMD)),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "bytecode": bytecode(),
    }


def cpu_seconds():
    """``(busy, idle)``: CPU-seconds of all cores since boot (Linux's /proc/stat; None
    elsewhere). Their change over a run tells work (busy) from waiting (idle)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    seconds = [int(f) / tick for f in fields]  # user ... iowait ... steal
    idle = seconds[3] + seconds[4]
    return sum(seconds) - idle, idle


def report(result, path=None):
    """Print ``result`` as JSON; also write it to ``path`` when given (a benchmark's --json)."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
