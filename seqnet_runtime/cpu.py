"""What the CPU offers for reduced precision, from /proc/cpuinfo (Linux): for choosing bf16 or
int8 graphs and for labelling benchmark rows."""

from pathlib import Path

# AMX tiles (bf16 / int8 matrix units), AVX-512 VNNI (int8 dot products), AVX-512 BF16, AVX-512
FEATURES = ("amx_bf16", "amx_int8", "amx_tile", "avx512_vnni", "avx512_bf16", "avx512f")


def cpu_features(cpuinfo="/proc/cpuinfo", names=FEATURES):
    """The flags among ``names`` (FEATURES by default) this CPU has, in their order; () where
    /proc/cpuinfo is unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return tuple(f for f in names if f in flags)
