"""What a benchmark ran on, named alike in every benchmark's JSON."""

import platform
from pathlib import Path


def cpu_name():
    """The CPU's model name (/proc/cpuinfo on Linux, where ``platform`` only says x86_64)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(result, path=None):
    """Print ``result`` as JSON; also write it to ``path`` when given (a benchmark's --json)."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
