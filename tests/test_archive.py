"""``seqnet-run`` over an archive (``seqnet_runtime.archive``): several videos in one search,
segments equal to an unsplit run (``--every`` too), resumable after the driver is killed, bad
inputs reported while the rest is searched, and (slow) the same outputs from Ray workers, one
of them killed mid-segment. CI runs one ``--every`` and one kill moment; the slow run adds
``--every 3`` and a kill after 3 segments."""

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from seqnet_runtime import archive as archive_module
from seqnet_runtime.cli import main as seqnet_run
from seqnet_runtime.errors import SeqNetError
from seqnet_train.cli import main as seqnet
from tests.tiny import tiny_model

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = {"cam1": (60, 1), "cam2": (50, 2), "cam3": (90, 3)}  # frames, seed


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A tiny exported package, three synthetic videos in a folder (with a file that is not a
    video), and query crops."""
    from seqnet_export.run import write_graphs

    base = tmp_path_factory.mktemp("archive")
    (base / "pkg").mkdir()
    write_graphs(base / "pkg", tiny_model().eval(), config_yaml="")
    (base / "cameras").mkdir()
    for name, (frames, seed) in VIDEOS.items():
        seqnet(["synth", "--format", "video", "--out", str(base / name), "--seed", str(seed),
                "--frames", str(frames), "--size", "96", "128", "--queries", "2"])  # fmt: skip
        shutil.copy(base / name / "video.mp4", base / "cameras" / f"{name}.mp4")
    (base / "cameras" / "notes.txt").write_text("not a video")
    return base


def arguments(base, out, *inputs, extra=()):
    args = [*map(str, inputs), "--model", str(base / "pkg"), "--out", str(out), "--batch", "2"]
    for q in sorted((base / "cam1" / "queries").glob("*.jpg")):
        args += ["--query", str(q)]
    return [*args, "--no-video", *extra]


def run(base, out, *inputs, extra=()):
    result = CliRunner().invoke(seqnet_run, arguments(base, out, *inputs, extra=extra))
    assert result.exit_code == 0, result.output
    return json.loads((out / "matches.json").read_text())


def outputs(out):
    """What must not depend on how the work was spread or interrupted: the archive's and
    each input's matches.json."""
    found = {"archive": (out / "matches.json").read_text()}
    for folder in sorted((out / "inputs").iterdir()):
        found[folder.name] = (folder / "matches.json").read_text()
    return found


def test_a_folder_of_videos_is_one_search(archive, tmp_path):
    out = tmp_path / "out"
    report = run(archive, out, archive / "cameras")
    assert [i["name"] for i in report["inputs"]] == ["cam1", "cam2", "cam3"]
    assert [i["frames"] for i in report["inputs"]] == [60, 50, 90]
    assert report["skipped"] == [
        {"input": str(archive / "cameras" / "notes.txt"), "reason": "not a video"}
    ]
    for q in report["queries"]:
        sims = [a["best"]["similarity"] for a in q["appearances"]]
        assert sims == sorted(sims, reverse=True)
        assert len(q["hits"]) == 10
        for a in q["appearances"][:3]:
            assert (out / a["thumb"]).is_file()
    # an input's folder holds what seqnet-run on that video alone writes
    alone = run(
        archive, tmp_path / "alone", archive / "cameras" / "cam2.mp4", extra=["--segment", "9"]
    )
    mine = json.loads((out / "inputs" / "cam2" / "matches.json").read_text())
    assert mine["queries"] == alone_input(tmp_path / "alone")["queries"]
    assert alone["inputs"][0]["frames"] == 50
    page = (out / "index.html").read_text()
    assert "inputs/cam3/index.html" in page and "not a video" in page


def alone_input(out):
    (folder,) = (out / "inputs").iterdir()
    return json.loads((folder / "matches.json").read_text())


@pytest.mark.parametrize("every", [1, pytest.param(3, marks=pytest.mark.slow)])  # CI time
def test_segments_equal_an_unsplit_run(archive, tmp_path, every):
    videos = (archive / "cameras" / "cam3.mp4", archive / "cameras" / "cam1.mp4")
    extra = ["--every", str(every)]
    run(archive, tmp_path / "whole", *videos, extra=extra)
    run(archive, tmp_path / "split", *videos, extra=[*extra, "--segment", "1.3"])
    assert outputs(tmp_path / "whole") == outputs(tmp_path / "split")
    assert len(list((tmp_path / "split" / archive_module.SEGMENTS).rglob("*.npz"))) > 4
    per_frame = alone_or(tmp_path / "split", "cam3")["queries"][0]["per_frame"]
    assert [f[0] for f in per_frame] == list(range(0, 90, every))  # none twice, none missed


def alone_or(out, name):
    return json.loads((out / "inputs" / name / "matches.json").read_text())


def test_bad_inputs_are_reported_and_the_rest_searched(archive, tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (archive / "cameras" / "cam1.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(data[:300])
    (bad / "garbage.mp4").write_bytes(b"\0" * 4096)
    gone = bad / "gone.mp4"
    shutil.copy(archive / "cameras" / "cam2.mp4", gone)
    detect = archive_module.detect_segment

    def vanishing(session, segment, batch):  # the input disappears once the run has started
        if segment.path == str(gone.resolve()):
            gone.unlink(missing_ok=True)
        return detect(session, segment, batch)

    monkeypatch.setattr(archive_module, "detect_segment", vanishing)
    out = tmp_path / "out"
    report = run(archive, out, bad, archive / "cameras" / "cam3.mp4", tmp_path / "nowhere.mp4")
    assert [i["name"] for i in report["inputs"]] == ["cam3"]
    reasons = {Path(s["input"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"truncated.mp4", "garbage.mp4", "gone.mp4", "nowhere.mp4"}
    assert reasons["nowhere.mp4"] == "not found"
    assert "cannot read" in reasons["gone.mp4"] or "not found" in reasons["gone.mp4"]
    assert all("\n" not in r for r in reasons.values())


def _segments(out):
    return list((out / archive_module.SEGMENTS).rglob("*.npz"))


def _start(args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = "import sys; from seqnet_runtime.cli import main; main(sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.parametrize("after", [1, pytest.param(3, marks=pytest.mark.slow)])  # CI time
def test_resume_after_the_driver_is_killed(archive, tmp_path, after):
    inputs = [archive / "cameras" / f"{n}.mp4" for n in ("cam2", "cam1")]
    reference = tmp_path / "reference"
    run(archive, reference, *inputs, extra=["--segment", "1"])
    out = tmp_path / "out"
    args = arguments(archive, out, *inputs, extra=["--segment", "1"])
    driver = _start(args)
    deadline = time.monotonic() + 300
    while len(_segments(out)) < after and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done = len(_segments(out))
    assert 0 < done < len(_segments(reference))  # killed half-way
    run(archive, out, *inputs, extra=["--segment", "1"])
    assert outputs(out) == outputs(reference)
    assert len(_segments(out)) == len(_segments(reference))


@pytest.mark.slow
def test_ray_workers_give_the_same_outputs_even_when_one_is_killed(archive, tmp_path):
    """A local Ray (2 CPUs, 2 workers); the driver detects segments itself while Ray starts,
    so the archive is long enough (1,200 frames) for the workers to get many; one of them is
    killed once they work."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install '.[cluster]')")
    long = tmp_path / "long"
    seqnet(["synth", "--format", "video", "--out", str(long), "--seed", "4", "--frames", "1200",
            "--size", "96", "128", "--queries", "2"])  # fmt: skip
    inputs = [archive / "cameras" / "cam2.mp4", long / "video.mp4"]
    run(archive, tmp_path / "local", *inputs, extra=["--segment", "1"])
    out = tmp_path / "ray"
    args = arguments(archive, out, *inputs, extra=["--segment", "1", "--ray", "--workers", "2"])
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_ADDRESS="")
    code = "import sys; from seqnet_runtime.cli import main; main(sys.argv[1:])"
    log = tmp_path / "driver.log"
    with log.open("w") as stderr:
        driver = subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT,
                                  stderr=stderr)  # fmt: skip
        killed = None
        deadline = time.monotonic() + 600
        while driver.poll() is None and time.monotonic() < deadline:
            if killed is None and "Ray: 2 workers" in log.read_text():  # the actors work
                found = subprocess.run(["pgrep", "-f", "SegmentWorker"], capture_output=True,
                                       text=True)  # fmt: skip
                pids = [int(p) for p in found.stdout.split()]
                if pids:
                    killed = pids[0]
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        assert driver.wait(timeout=60) == 0, log.read_text()[-2000:]
    assert killed is not None, "no Ray worker was seen to kill"
    assert outputs(out) == outputs(tmp_path / "local")
    done = json.loads((out / "run.json").read_text())["segments"]
    assert done["workers"] > 0 and done["here"] + done["workers"] == len(_segments(out))


def test_a_ray_that_cannot_be_joined_is_one_line(archive, tmp_path, monkeypatch):
    """A cluster that refuses the driver (down, or token authentication without the token):
    one line that says how to join, not Ray's traceback."""
    ray = pytest.importorskip("ray")

    def refuse(address=None, **_):
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}\n(Ray's details)")

    monkeypatch.setattr(ray, "init", refuse)
    argv = arguments(
        archive, tmp_path / "out", archive / "cameras", extra=["--ray", "10.9.8.7:6379"]
    )
    result = CliRunner().invoke(seqnet_run, argv)
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]  # after the progress bar's last state
    assert "seqnet-run: error: cannot join Ray at 10.9.8.7:6379: Failed" in line, line
    assert "RAY_AUTH_MODE=token" in line and "details" not in line, line


@pytest.mark.slow
def test_a_ray_the_search_started_is_stopped_with_it(archive, tmp_path, monkeypatch):
    """``search_archive(ray="auto")`` leaves no Ray behind that it started (repeated searches
    in one process each start their own), and stops none that its caller started. By default
    it starts a worker per CPU that Ray has, each detecting with one thread."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[cluster]')")
    monkeypatch.setenv("RAY_ADDRESS", "")
    inputs = [archive / "cameras" / "cam2.mp4"]
    queries = sorted((archive / "cam1" / "queries").glob("*.jpg"))
    search = {"model": archive / "pkg", "batch": 2, "annotate": False, "ray": "auto"}
    assert not ray.is_initialized()
    archive_module.search_archive(inputs, queries, out=tmp_path / "started", **search)
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        archive_module.search_archive(inputs, queries, out=tmp_path / "joined", **search)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    started, joined = (
        json.loads((tmp_path / d / "run.json").read_text()) for d in ("started", "joined")
    )
    assert started["mode"] == joined["mode"] == "ray"
    assert (started["workers"], joined["workers"]) == (os.cpu_count(), 2)
    assert started["threads"] == joined["threads"] == 1
    assert (tmp_path / "started" / "matches.json").read_text() == (
        tmp_path / "joined" / "matches.json"
    ).read_text()


def test_more_workers_than_ray_has_cpus_is_one_line_not_a_wait(archive, tmp_path, monkeypatch):
    """Actors that Ray can never place (each takes a CPU; a local Ray has this machine's
    cores) were waited for forever: the search now says so in one line and stops its Ray."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[cluster]')")
    monkeypatch.setenv("RAY_ADDRESS", "")
    workers = os.cpu_count() + 1
    argv = arguments(archive, tmp_path / "out", archive / "cameras" / "cam2.mp4",
                     extra=["--ray", "auto", "--workers", str(workers)])  # fmt: skip
    result = CliRunner().invoke(seqnet_run, argv)
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]  # after the progress bar's last state
    assert line.endswith(
        f"seqnet-run: error: --workers {workers} needs {workers} CPUs and Ray has "
        f"{os.cpu_count()}: ask for at most {os.cpu_count()}, or join a larger cluster "
        "(--ray ADDRESS)"
    ), line
    assert not ray.is_initialized()


class StandInRay:
    """A running Ray with ``resources``, standing in for one where what is tested is ours,
    before any actor (a real one is started by the test above). Its ``init`` takes a moment, as
    Ray's does; starting an actor raises."""

    exceptions = types.SimpleNamespace(AuthenticationError=ConnectionError)

    def __init__(self, resources, events=None):
        self.resources, self.events = resources, [] if events is None else events

    def is_initialized(self):
        return True

    def init(self, **_):
        self.events.append("init")
        time.sleep(0.5)
        self.events.append("ready")

    def available_resources(self):
        return self.resources  # as Ray reports them: no "GPU" key where there is none

    cluster_resources = available_resources

    def remote(self, **_):
        raise AssertionError("an actor was started")


def test_a_ray_without_gpus_for_cuda_workers_is_one_line(monkeypatch):
    """``--device cuda`` on a Ray that has no GPU: by default (no ``--workers``) one worker was
    asked for and the error spoke of "--workers 1 needs 1 GPUs"; it now says what is missing."""
    monkeypatch.setitem(sys.modules, "ray", StandInRay({"CPU": 2.0}))
    for workers in (None, 2):
        pool = archive_module.RayPool("auto", workers, "pkg", "onnxruntime", {"device": "cuda"},
                                      None, 2)  # fmt: skip
        with pytest.raises(SeqNetError) as e:
            pool._init()
        assert str(e.value) == (
            "a Ray worker takes a GPU (--device cuda) and Ray has none: join a cluster with "
            "GPUs (--ray ADDRESS)"
        )
        assert pool.actors == []


def test_ray_is_started_before_this_process_decodes(monkeypatch):
    """Ray forks its processes from the driver with a ``preexec_fn``; a child forked while
    another thread decoded video freed that thread's PyAV objects and hung on libav's threads
    (seen in CI). This process detects while the actors start, so only after ``ray.init``."""
    events = []
    monkeypatch.setitem(sys.modules, "ray", StandInRay({"CPU": 2.0}, events))
    monkeypatch.setattr(archive_module, "detect_segment",
                        lambda session, segment, batch: events.append("detect"))  # fmt: skip
    pool = archive_module.RayPool("auto", 2, "pkg", "onnxruntime", {}, None, 2)
    with pytest.raises(AssertionError, match="an actor was started"):
        list(pool.map([archive_module.Segment("v.mp4", "k", 4 * n, 4 * n + 4, 1, 4)
                       for n in range(3)]))  # fmt: skip
    assert events[:2] == ["init", "ready"], events


def test_a_segment_is_cut_in_pieces_of_whole_batches():
    """The pieces of a segment cover its frames once, each starting on a batch of sampled
    frames as segments do (so that each frame is detected in the batch it is in unsplit); the
    last keeps the segment's end, None included (to the video's end)."""
    for start, end, every, batch, pieces, made in [
        (0, 52, 1, 4, 2, 2), (52, None, 1, 4, 4, 4), (36, 126, 3, 2, 4, 4),
        (0, 10, 1, 4, 4, 3),  # 10 frames in batches of 4: 3 pieces at most
    ]:  # fmt: skip
        frames = -(-((end or start + 41) - start) // every)
        segment = archive_module.Segment("v.mp4", "k", start, end, every, frames)
        parts = archive_module.cut(segment, pieces, batch)
        assert len(parts) == made, parts
        assert [p.start for p in parts[1:]] == [p.end for p in parts[:-1]]
        assert parts[0].start == start and parts[-1].end == end
        assert all((p.start - start) % (every * batch) == 0 for p in parts)
        assert sum(p.frames for p in parts) == frames
        assert all(p.frames * every == p.end - p.start for p in parts[:-1])
    assert archive_module.cut(segment, 1, 2) == [segment]


class InlineRay:
    """Ray as ``RayPool`` uses it, each actor a plain object in this process whose calls run
    when their results are asked for, oldest first: what is tested is how the work is spread
    over the workers and put back together."""

    exceptions = types.SimpleNamespace(AuthenticationError=ConnectionError)

    def __init__(self, cpus):
        self.cpus, self.detected = cpus, []  # the segments the actors were given

    def is_initialized(self):
        return True

    def init(self, **_):
        pass

    def available_resources(self):
        return {"CPU": float(self.cpus)}

    cluster_resources = available_resources

    def remote(self, **_):
        def actor_class(cls):
            def start(*args):
                actor = cls(*args)
                calls = {"ready": actor.ready, "detect": self._logged(actor.detect)}
                return types.SimpleNamespace(**{
                    name: types.SimpleNamespace(remote=lambda *a, f=f: lambda: f(*a))
                    for name, f in calls.items()
                })  # fmt: skip

            return types.SimpleNamespace(remote=start)

        return actor_class

    def _logged(self, detect):
        def logged(segment):
            self.detected.append(segment)
            return detect(segment)

        return logged

    def get(self, refs):
        return [ref() for ref in refs] if isinstance(refs, list) else refs()

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def kill(self, actor):
        pass

    def get_runtime_context(self):
        return types.SimpleNamespace(gcs_address="this process")


def test_the_last_segments_go_to_the_workers_in_pieces_put_back_together(
    archive, tmp_path, monkeypatch
):
    """Whole segments while much is left, then pieces, so that at the end no worker idles
    while another finishes a whole segment; each segment's stored detections, and so every
    output, are those of the in-process run."""
    ray = InlineRay(2)
    monkeypatch.setitem(sys.modules, "ray", ray)
    inputs = (archive / "cameras" / "cam3.mp4", archive / "cameras" / "cam1.mp4")
    extra = ["--segment", "2"]
    run(archive, tmp_path / "local", *inputs, extra=extra)
    run(archive, tmp_path / "ray", *inputs, extra=[*extra, "--ray", "--workers", "2"])
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    whole = {p.name: p for p in _segments(tmp_path / "local")}
    stored = {p.name: p for p in _segments(tmp_path / "ray")}
    assert stored.keys() == whole.keys()
    for name, path in stored.items():
        with np.load(path) as mine, np.load(whole[name]) as theirs:
            assert mine.files == theirs.files
            for key in mine.files:
                np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{name}: {key}")
    done = json.loads((tmp_path / "ray" / "run.json").read_text())["segments"]
    assert done["here"] + done["workers"] == len(whole)
    sizes = [s.frames for s in ray.detected]
    assert len(sizes) > done["workers"], sizes  # some of their segments went out in pieces
    assert sizes[0] == 20, sizes  # but not the first: 2 s of 10 frames/s, whole


def test_worker_threads_benchmark_times_every_process_of_each_layout(archive, tmp_path, capsys):
    """``benchmarks/worker_threads.py`` (the per-worker figure of the archive's docs): each
    layout's processes report their frames/s; a malformed layout is one line, and so is a
    process that fails (it left the others and the parent waiting for ever)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import worker_threads

    with pytest.raises(SystemExit) as e:
        worker_threads.main(["--model", "x", "--layouts", "2y1"])
    assert e.value.code == 2 and "WORKERSxTHREADS" in capsys.readouterr().err
    out = tmp_path / "layouts.json"
    worker_threads.main([str(archive / "cameras" / "cam2.mp4"), "--model", str(archive / "pkg"),
                         "--layouts", "1x1,2x1", "--frames", "8", "--batch", "2",
                         "--json", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["layouts"]
    layouts = [(r["workers"], r["threads"], len(r["fps_each"])) for r in rows]
    assert layouts == [(1, 1, 1), (2, 1, 2)]
    assert all(fps > 0 for r in rows for fps in r["fps_each"])
    assert rows[1]["fps_total"] == pytest.approx(sum(rows[1]["fps_each"]), abs=0.02)
    with pytest.raises(SystemExit) as e:  # one process failing stops them all, in one line
        worker_threads.main([str(tmp_path / "gone.mp4"), "--model", str(archive / "pkg"),
                             "--layouts", "2x1", "--frames", "8"])  # fmt: skip
    assert str(e.value).startswith("a 2x1 worker failed: RuntimeError: cannot read"), e.value

    said = []  # a process killed from outside cannot report: it is seen dead, not waited for

    def layout():
        with pytest.raises(SystemExit) as e:
            worker_threads.main([str(archive / "cameras" / "cam2.mp4"), "--frames", "8",
                                 "--model", str(archive / "pkg"), "--layouts", "2x1"])  # fmt: skip
        said.append(str(e.value))

    runner = threading.Thread(target=layout, daemon=True)
    runner.start()
    try:
        while not (children := multiprocessing.active_children()) and runner.is_alive():
            time.sleep(0.01)
        os.kill(children[0].pid, signal.SIGKILL)
        runner.join(timeout=120)
    finally:  # were they left waiting, this process would wait for them at its exit
        for child in multiprocessing.active_children():
            child.kill()
    assert said == [f"a 2x1 worker died (exit code {-signal.SIGKILL})"]
