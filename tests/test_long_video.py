"""Memory bounded by design (issue 34): ``seqnet-run`` on a 2,000-frame video peaks within
100 MB of the same run on 200 frames, its index on disk holds every detection, and a second
query reads that index (no detection) and gives what a fresh run gives."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqnet_runtime.index import load_index
from seqnet_train.cli import main as seqnet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from long_video_memory import RUN, peak_mb, random_package  # noqa: E402


@pytest.mark.slow
def test_memory_is_flat_in_the_videos_length(tmp_path):
    package = random_package(tmp_path / "pkg")
    peaks, runs = {}, {}
    for frames in (200, 2000):
        video = tmp_path / f"v{frames}"
        seqnet(["synth", "--format", "video", "--out", str(video), "--frames", str(frames),
                "--size", "96", "128", "--seed", "4"])  # fmt: skip
        query = sorted((video / "queries").glob("*.jpg"))[0]
        out = tmp_path / f"out{frames}"
        args = [str(video / "video.mp4"), "--query", str(query), "--model", str(package),
                "--out", str(out), "--no-video", "--batch", "4"]  # fmt: skip
        peaks[frames] = peak_mb(args, cwd=ROOT)[0]
        runs[frames] = (args, out)
    assert peaks[2000] - peaks[200] <= 100, peaks

    args, out = runs[2000]
    (unit,) = load_index(out / "index").values()
    stored = unit.arrays()
    assert len(stored["frames"]) == 2000 and stored["counts"].sum() == len(stored["boxes"]) > 0
    first = json.loads((out / "matches.json").read_text())
    # a second query on the same video: every detection from the index
    second = subprocess.run(
        [sys.executable, "-c", RUN, *args],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "1 units reused, 0 to index" in second.stderr
    again = json.loads((out / "matches.json").read_text())
    assert again["queries"][0]["per_frame"] == first["queries"][0]["per_frame"]
    sims = [f[2] for f in again["queries"][0]["per_frame"] if f[2] is not None]
    assert len(sims) > 100 and np.isfinite(sims).all()
