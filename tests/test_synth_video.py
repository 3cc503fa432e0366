"""``seqnet synth --format video`` (seqnet_train.data.synth_video) and its scorer
(seqnet_runtime.video_score): the video, its truth and queries, and the scores of made-up runs."""

import hashlib
import io
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seqnet_runtime import video_score as video_search
from seqnet_runtime.index import IndexWriter
from seqnet_train.data import synth_video
from seqnet_train.data.synth_video import MIN_VISIBLE, identity_looks, min_frames, write_video
from seqnet_train.data.synth_world import Streams, plan
from seqnet_train.errors import SeqNetError

av = pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]

VIDEO = dict(
    seed=3, frames=60, fps=10, size=(120, 160), train_ids=5, test_ids=4, queries=2, cameras=3
)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "v", **VIDEO)


@pytest.fixture(scope="module")
def truth(video):
    return json.loads((video / "truth.json").read_text())


@pytest.fixture(scope="module")
def decoded(video):
    with av.open(str(video / "video.mp4")) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        return stream.frames, stream.codec_context.name, frames


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deterministic(video, tmp_path):
    again = write_video(tmp_path / "again", **VIDEO)
    files = sorted(p.relative_to(video) for p in video.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len(files) == 4  # video, truth, two queries
    for f in files:  # digests: pytest's diff of two differing videos takes minutes
        assert _digest(video / f) == _digest(again / f), f


def test_video_decodes_to_declared_frames(truth, decoded):
    declared, codec, frames = decoded
    assert truth["frames"] == len(frames) == declared == 60
    assert codec == "mpeg4"
    assert truth["size"] == [120, 160] and truth["fps"] == 10 and truth["video"] == "video.mp4"
    assert all(f.shape == (120, 160, 3) for f in frames)


def test_truth_boxes(truth):
    height, width = truth["size"]
    assert len(truth["frames_truth"]) == truth["frames"]
    looks = identity_looks(3, 5, 4)
    rows = [r for frame in truth["frames_truth"] for r in frame]
    for r in rows:
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert 0 <= r["visible"] <= 1
        assert r["id"] is None or r["id"] in looks
    for frame in truth["frames_truth"]:  # one person is in one place at a time
        ids = [r["id"] for r in frame if r["id"] is not None]
        assert len(ids) == len(set(ids))
    assert truth["min_visible"] == MIN_VISIBLE == 0.5
    assert set(truth["queries"].values()) <= set(truth["identities"])
    assert len(truth["queries"]) == 2 and len(truth["identities"]) == 4
    assert any(r["id"] is None for r in rows)  # passers-by
    for pid in truth["queries"].values():
        seen = [f for f, frame in enumerate(truth["frames_truth"]) for r in frame if r["id"] == pid]
        assert len(seen) >= 5 and len(seen) < truth["frames"]  # walks in and out
    # partly hidden, not by the frame's edge: passing people or the foreground objects
    inside = [r for r in rows if r["box"][0] > 0 and r["box"][2] < width]
    assert any(0.2 < r["visible"] < 0.9 for r in inside)


def _clear_frame(truth, box):
    """A frame where nobody's box touches ``box``."""
    for f, frame in enumerate(truth["frames_truth"]):
        if not any(_overlap(box, r["box"]) for r in frame):
            return f
    return None


def _overlap(a, b):
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def test_truth_boxes_hold_the_drawn_people(truth, decoded):
    """Where a well visible person's box is, the frame differs from the same place when
    nobody is there; where nobody is in either frame, it is the same background."""
    frames = decoded[2]
    checked = 0
    for f, frame in enumerate(truth["frames_truth"]):
        for r in frame:
            if r["visible"] < 0.9:
                continue
            clear = _clear_frame(truth, r["box"])
            if clear is None:
                continue
            x1, y1, x2, y2 = r["box"]
            diff = np.abs(frames[f][y1:y2, x1:x2].astype(int) - frames[clear][y1:y2, x1:x2])
            assert diff.mean() > 12, (f, r)
            checked += 1
    assert checked >= 10
    # background against background: a corner nobody covers in two frames
    height, width = truth["size"]
    corner = [0, 0, width // 4, height // 3]
    empty = [
        f
        for f, frame in enumerate(truth["frames_truth"])
        if not any(_overlap(corner, r["box"]) for r in frame)
    ]
    assert len(empty) >= 2
    a, b = (frames[f][: corner[3], : corner[2]].astype(int) for f in (empty[0], empty[-1]))
    assert np.abs(a - b).mean() < 3


def test_people_are_the_datasets_test_identities():
    """The looks and numbers of ``seqnet synth``'s test identities for the same seed."""
    streams = Streams.from_seed(3)
    frames, _ = plan(streams, 14, 10, 5, 4, 3, (96, 128), 3)
    dataset = {p.pid: p.look for f in frames if f.split == "test" for p in f.people if p.pid}
    assert dataset == identity_looks(3, 5, 4)
    assert sorted(dataset) == [6, 7, 8, 9]


def _coarse(image, size):
    """``image`` at ``size``, then averaged over 4 x 4 blocks: the picture without the pixel
    noise of the background texture and of JPEG."""
    small = (max(size[0] // 4, 1), max(size[1] // 4, 1))
    return np.asarray(image.resize(size).resize(small, Image.BOX), np.float32)


def test_queries_are_separate_stills(video, truth, decoded):
    """Each query crop is its person alone, and no appearance of that person in the video is
    the crop (a crop cut from the video and saved as JPEG would be within a few levels)."""
    frames = decoded[2]
    for name, pid in truth["queries"].items():
        assert name == f"p{pid}"
        crop = Image.open(video / "queries" / f"{name}.jpg")
        crop.load()
        assert crop.mode == "RGB" and crop.height >= 0.5 * 120 and crop.width >= 20
        q = _coarse(crop, crop.size)
        diffs, controls = [], []
        for f, frame in enumerate(truth["frames_truth"]):
            for r in frame:
                if r["id"] == pid:
                    x1, y1, x2, y2 = r["box"]
                    cut = Image.fromarray(frames[f][y1:y2, x1:x2])
                    diffs.append(np.abs(_coarse(cut, crop.size) - q).mean())
                    buf = io.BytesIO()
                    cut.save(buf, "JPEG", quality=95)
                    again = _coarse(Image.open(buf), crop.size)
                    controls.append(np.abs(again - _coarse(cut, crop.size)).mean())
        assert min(diffs) > 12 > max(controls), (name, min(diffs), max(controls))


def test_bad_arguments(video, tmp_path):
    with pytest.raises(SeqNetError, match="empty folder"):
        write_video(video, **VIDEO)
    with pytest.raises(SeqNetError, match="even"):
        write_video(tmp_path / "odd", **(VIDEO | {"size": (121, 160)}))
    with pytest.raises(SeqNetError, match="queries"):
        write_video(tmp_path / "many", **(VIDEO | {"queries": 5}))
    assert not (tmp_path / "odd").exists() and not (tmp_path / "many").exists()


# --- any length, any seed --------------------------------------------------------------------

SMALL = (96, 128)  # the smallest 3:4 frame --size allows, to keep long videos quick
SEEDS = (0, 5, 6)  # 5 and 6 failed at 600 to 1500 frames when each person walked only once


def _synth(out, seed, frames):
    """``seqnet synth --format video`` with the default queries and fps on a small frame."""
    from seqnet_train.cli import main

    argv = ["synth", "--format", "video", "--seed", str(seed), "--frames", str(frames)]
    main(argv + ["--size", *map(str, SMALL), "--out", str(out)])
    return out


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _check_long_video(tmp_path, seed, frames):
    """The video decodes to ``frames`` frames, the truth covers each of them, each queried
    person is well visible in one frame in 15 (and never twice in a frame), and a second run
    gives the same bytes."""
    first = _synth(tmp_path / "a", seed, frames)
    truth = json.loads((first / "truth.json").read_text())
    assert truth["frames"] == len(truth["frames_truth"]) == frames
    with av.open(str(first / "video.mp4")) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == frames
    assert len(truth["queries"]) == 3 and len(truth["identities"]) == 5
    for pid in truth["queries"].values():
        well = [r for rows in truth["frames_truth"] for r in rows if r["id"] == pid]
        assert sum(r["visible"] >= 0.9 for r in well) >= max(5, frames // 15), pid
    for rows in truth["frames_truth"]:
        ids = [r["id"] for r in rows if r["id"] is not None]
        assert len(ids) == len(set(ids))
    again = _synth(tmp_path / "b", seed, frames)
    expected = ["truth.json", "video.mp4", *(f"queries/{n}.jpg" for n in truth["queries"])]
    assert _files(first) == _files(again) == sorted(expected)
    for name in _files(first):
        assert _digest(first / name) == _digest(again / name), name


@pytest.mark.parametrize("frames", [150, 600, 1000])
@pytest.mark.parametrize("seed", SEEDS)
def test_long_videos_for_any_seed(tmp_path, seed, frames):
    _check_long_video(tmp_path, seed, frames)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_5000_frames(tmp_path, seed):
    _check_long_video(tmp_path, seed, 5000)


def test_shortest_video(tmp_path):
    """``min_frames`` frames work for any seed; one fewer is refused with the number to ask for."""
    shortest = min_frames(10, SMALL)
    assert shortest == min_frames(10) == 50
    assert min_frames(25) == 124 and min_frames(10, (180, 320)) > 50  # longer crossings
    for seed in SEEDS:
        out = write_video(tmp_path / f"s{seed}", seed=seed, frames=shortest, size=SMALL)
        assert len(json.loads((out / "truth.json").read_text())["frames_truth"]) == shortest
    with pytest.raises(SeqNetError, match="--frames must be at least 50 at 10 fps"):
        write_video(tmp_path / "short", seed=0, frames=shortest - 1, size=SMALL)
    assert not (tmp_path / "short").exists()


def test_impossible_scenes_say_what_would_help(tmp_path, monkeypatch):
    """Frames are never the answer (any count from the shortest on works): fewer queries are."""
    monkeypatch.setattr(synth_video, "TRIES", 2)
    monkeypatch.setattr(synth_video, "TRAFFIC_TRIES", 2)
    monkeypatch.setattr(synth_video, "_acceptable", lambda *a: False)
    with pytest.raises(SeqNetError, match="lower --queries$") as e:
        write_video(tmp_path / "a", **VIDEO)
    assert "frame count" not in str(e.value)
    with pytest.raises(SeqNetError, match="lower --queries or use a --size at least as wide"):
        write_video(tmp_path / "narrow", **(VIDEO | {"size": (160, 120)}))
    monkeypatch.setattr(synth_video, "_acceptable", lambda *a: True)  # the opening passes, ...
    monkeypatch.setattr(synth_video, "_well_seen", lambda truth, pid: 0)  # ... the rest not
    with pytest.raises(SeqNetError, match="lower --queries") as e:
        write_video(tmp_path / "b", **(VIDEO | {"frames": 300}))
    assert "frame count" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_world_is_linear_in_frames(monkeypatch):
    """Each frame looks only at the walks under way: the walks' boxes computed for the truth
    grow with the people in the frames, not with the walks in the whole video."""
    looks = identity_looks(0, 40, 20)
    rng = np.random.default_rng(0)
    queried, distractors = sorted(looks)[:3], sorted(looks)[3:5]
    calls = {}
    box = synth_video._box

    def counted(*args):
        calls["n"] = calls.get("n", 0) + 1
        return box(*args)

    for frames in (1000, 8000):
        walks, truth = synth_video._world(rng, 0, looks, queried, distractors, frames, 10, SMALL)
        assert len(walks) > frames / 100  # people keep coming
        calls["n"] = 0
        monkeypatch.setattr(synth_video, "_box", counted)
        assert synth_video._truth(walks, frames, SMALL, 10) == truth
        monkeypatch.setattr(synth_video, "_box", box)
        shown = sum(len(rows) for rows in truth)
        assert calls["n"] <= shown + 2 * frames, (frames, calls["n"], shown, len(walks))


def test_frames_are_streamed(tmp_path, monkeypatch):
    """The encoder gets each frame as it is drawn: never a list of the whole video."""
    drawn, render = [], synth_video._render
    encode = synth_video._encode

    def counting_render(*args):
        drawn.append(1)
        return render(*args)

    def checking_encode(path, pictures, fps, size):
        assert not isinstance(pictures, list | tuple)

        def one_at_a_time():
            for k, picture in enumerate(pictures):
                assert len(drawn) == k + 1  # drawn just now, not ahead
                yield picture

        encode(path, one_at_a_time(), fps, size)

    monkeypatch.setattr(synth_video, "_render", counting_render)
    monkeypatch.setattr(synth_video, "_encode", checking_encode)
    write_video(tmp_path / "v", **VIDEO)
    assert len(drawn) == VIDEO["frames"]


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
def test_outputs_get_the_umasks_permissions(tmp_path, mask):
    old = os.umask(mask)
    try:
        out = write_video(tmp_path / "v", **VIDEO)
    finally:
        os.umask(old)
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(folders) == 2 and len(files) == 4
    assert {_mode(p) for p in folders} == {0o777 & ~mask}
    assert {_mode(p) for p in files} == {0o666 & ~mask}
    assert [p.name for p in tmp_path.iterdir()] == ["v"]  # no temporary left beside it


# --- the scorer ------------------------------------------------------------------------------


def _write_run(folder, frames, dets, queries, threshold=0.5, video="video.mp4"):
    """A ``seqnet-run`` output folder: ``dets`` per processed frame = [(box, embedding)]."""
    folder.mkdir(parents=True)
    dim = len(queries[0][1])
    key = str(Path(video).resolve())
    index = IndexWriter(folder / "index", "test", dim)
    for f, per in zip(frames, dets):
        index.add(key, [1, 2, 1], f, f / 10, {
            "boxes": np.array([d[0] for d in per], np.float32).reshape(-1, 4),
            "scores": np.ones(len(per), np.float32),
            "embeddings": np.array([d[1] for d in per], np.float32).reshape(-1, dim),
        })  # fmt: skip
    index.end(key)
    index.close()
    matches = {
        "version": 1, "input": str(video), "every": 1, "threshold": threshold, "partial": False,
        "queries": [
            {"name": n, "image": f"{n}.jpg", "box": [0, 0, 1, 1], "embedding": list(e),
             "hits": [], "per_frame": []}
            for n, e in queries
        ],
    }  # fmt: skip
    (folder / "matches.json").write_text(json.dumps(matches))
    return folder


def _onehot(pid, ids):
    e = np.zeros(len(ids) + 1)
    e[ids.index(pid) if pid in ids else len(ids)] = 1.0
    return e.tolist()


def test_perfect_run_on_the_video(truth, tmp_path):
    """Detections exactly on every truth box, embeddings one-hot by identity: AP and recall 1,
    no false match; with every 2nd frame only the processed frames' appearances count."""
    ids = truth["identities"]
    queries = [(n, _onehot(p, ids)) for n, p in truth["queries"].items()] + [("other", [1] * 5)]
    for every in (1, 2):
        frames = list(range(0, truth["frames"], every))
        dets = [
            [(r["box"], _onehot(r["id"], ids)) for r in truth["frames_truth"][f]] for f in frames
        ]
        run = _write_run(tmp_path / f"run{every}", frames, dets, queries)
        (tmp_path / "truth.json").write_text(json.dumps(truth))
        result = video_search.score(run, tmp_path / "truth.json")
        assert result["skipped"] == ["other"] and result["frames"] == len(frames)
        for name, pid in truth["queries"].items():
            q = result["queries"][name]
            need = sum(
                1 for f in frames for r in truth["frames_truth"][f]
                if r["id"] == pid and r["visible"] >= 0.5
            )  # fmt: skip
            assert q["appearances"] == need > 0
            assert q["ap"] == q["recall"] == q["detected"] == 1.0 and q["false_matches"] == 0
        assert result["mean"]["ap"] == 1.0 and result["mean"]["recall"] == 1.0


# A hand-made truth: the query person 7 (one frame less than half visible), 8 a distractor.
P7 = [[10, 10, 30, 50], [12, 10, 32, 50], [14, 10, 34, 50], None, [20, 10, 40, 50]]
P8 = [40, 10, 60, 50]


def _row(box, pid, visible=1.0):
    return {"box": box, "id": pid, "visible": visible}


HAND_TRUTH = {
    "version": 1, "video": "video.mp4", "fps": 10, "size": [60, 130], "frames": 5,
    "min_visible": 0.5, "queries": {"p7": 7}, "identities": [7, 8],
    "frames_truth": [
        [_row(P7[0], 7), _row([50, 10, 70, 50], None)],
        [_row(P7[1], 7), _row(P8, 8)],
        [_row(P7[2], 7, 0.3), _row(P8, 8)],
        [_row(P8, 8)],
        [_row(P7[4], 7, 0.8)],
    ],
}  # fmt: skip


def _sim(s):
    """An embedding whose similarity to the query [1, 0] is ``s``."""
    return [s, math.sqrt(1 - s * s)]


def test_perfect_hand_run(tmp_path):
    (tmp_path / "truth.json").write_text(json.dumps(HAND_TRUTH))
    dets = [
        [(r["box"], _sim(1.0 if r["id"] == 7 else 0.0)) for r in f]
        for f in HAND_TRUTH["frames_truth"]
    ]
    run = _write_run(tmp_path / "run", list(range(5)), dets, [("p7", [1.0, 0.0])])
    q = video_search.score(run, tmp_path / "truth.json")["queries"]["p7"]
    assert q == {
        "id": 7, "ap": 1.0, "recall": 1.0, "false_matches": 0, "false_match_rate": 0.0,
        "detected": 1.0, "appearances": 3, "ignored": 1,
    }  # fmt: skip


def test_imperfect_hand_run(tmp_path, capsys):
    """Ranked: C .95 (person 8) FP, A .9 TP, E .8 on the ignored appearance (left out), F .7
    (person 8) FP, D .6 TP, H .3 (IoU 1/3 with person 7) FP, B .2 FP, A2 .1 duplicate FP.
    AP = (1/2 x 1/2 + 1/2 x 2/4) x 2 found / 3 needed = 1/3. Threshold 0.5, per frame's best:
    frame 0 A hit, 1 C false, 2 E ignored, 3 F false, 4 H below: recall 1/3, 2 false matches
    in 5 frames; detected: frames 0 and 1 of 0, 1, 4 = 2/3."""
    (tmp_path / "truth.json").write_text(json.dumps(HAND_TRUTH))
    dets = [
        [([11, 10, 31, 50], _sim(0.9)), ([50, 10, 70, 50], _sim(0.2)), (P7[0], _sim(0.1))],
        [([40, 10, 60, 50], _sim(0.95)), (P7[1], _sim(0.6))],
        [(P7[2], _sim(0.8))],
        [([40, 10, 60, 50], _sim(0.7))],
        [([30, 10, 50, 50], _sim(0.3))],
    ]
    run = _write_run(tmp_path / "run", list(range(5)), dets, [("p7", [1.0, 0.0])])
    out = tmp_path / "scores.json"
    result = video_search.main(
        ["--run", str(run), "--truth", str(tmp_path / "truth.json"), "--json", str(out)]
    )
    q = result["queries"]["p7"]
    assert q["ap"] == round(1 / 3, 4) and q["recall"] == round(1 / 3, 4)
    assert q["false_matches"] == 2 and q["false_match_rate"] == 0.4
    assert q["detected"] == round(2 / 3, 4) and q["appearances"] == 3 and q["ignored"] == 1
    assert json.loads(out.read_text())["mean"]["ap"] == round(1 / 3, 4)
    assert "p7" in capsys.readouterr().out
    # a higher threshold: frame 1's C .95 is still a false match, frame 3's F .7 no more
    q = video_search.score(run, tmp_path / "truth.json", threshold=0.8)["queries"]["p7"]
    assert q["recall"] == round(1 / 3, 4) and q["false_matches"] == 1
    # a lower IoU: H (IoU 1/3) now finds frame 4's appearance
    q = video_search.score(run, tmp_path / "truth.json", iou_min=0.3)["queries"]["p7"]
    assert q["detected"] == 1.0


def test_scorer_errors(tmp_path):
    (tmp_path / "truth.json").write_text(json.dumps(HAND_TRUTH))
    with pytest.raises(SystemExit, match="matches.json"):
        video_search.main(
            ["--run", str(tmp_path / "nothing"), "--truth", str(tmp_path / "truth.json")]
        )
    run = _write_run(tmp_path / "run", [0], [[]], [("p9", [1.0, 0.0])])
    with pytest.raises(video_search.ScoreError, match="no query"):
        video_search.score(run, tmp_path / "truth.json")


def test_cli(video, tmp_path):
    """``seqnet synth --format video`` writes the same folder as ``write_video`` with the
    dataset's options (default frame count and rate); a bad option is one line."""
    from seqnet_train.cli import main

    argv = ["synth", "--format", "video", "--seed", "3", "--train-ids", "5", "--test-ids", "4"]
    argv += ["--cameras", "3", "--size", "120", "160"]
    main(argv + ["--out", str(tmp_path / "cli")])
    expected = write_video(tmp_path / "api", **(VIDEO | {"frames": 150, "queries": 3}))
    for name in ("truth.json", "video.mp4"):
        assert _digest(tmp_path / "cli" / name) == _digest(expected / name), name
    with pytest.raises(SystemExit, match="error: .*even"):
        main(argv[:-2] + ["121", "160", "--out", str(tmp_path / "odd")])
