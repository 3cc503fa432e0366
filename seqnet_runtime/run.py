"""``seqnet-run``: find one or more people in a video, a folder of images or one image.

One streaming pass (``seqnet_runtime.stream``) detects everyone in every processed frame and
compares them with every query; the output folder (written all or nothing) holds
``matches.json``, ``annotated.mp4``, ``timeline.png``, ``index.html`` with ``thumbs/``, and the
gallery index ``index.npz``, so that the next query on the same input and model detects
nothing again. Ctrl-C stops the pass and writes what was done, marked partial.
"""

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from seqnet_runtime import draw, html, timeline, video
from seqnet_runtime.backend import load
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.gallery import ImageGallery, VideoGallery, open_gallery
from seqnet_runtime.images import IMAGE_EXTS, check_box, read_pil, to_array
from seqnet_runtime.index import load_index, make_unit, rank, save_index
from seqnet_runtime.output import check_out, staged_dir
from seqnet_runtime.stream import frames_with_detections

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of matches.json
MARKERS = ("matches.json",)  # an --out holding this is ours to replace
DEFAULT_MODEL = Path("demo_output/model")  # what `make demo` exports
MIN_QUERY_SIDE = 16  # pixels: smaller crops hold too little of a person to search for
IMAGE_FPS = 2  # frames per second of annotated.mp4 for a folder of images
THUMB_WIDTH = 640


@dataclass
class Query:
    name: str
    path: Path
    image: Image.Image
    box: np.ndarray
    embedding: np.ndarray = None
    per_frame: list = field(default_factory=list)  # best similarity per frame (None: nobody)


def read_queries(paths, box=None):
    """The queries: each file a crop of the person alone (the whole crop is the box), or with
    ``box`` (only for one query) a person marked in a full image. Named after their files."""
    if not paths:
        raise SeqNetError("give at least one --query crop.jpg")
    if box is not None and len(paths) != 1:
        raise SeqNetError(f"--box marks a person in one query image; got {len(paths)} queries")
    queries, names = [], set()
    for path in map(Path, paths):
        image = read_pil(path)
        x1, y1, x2, y2 = box if box is not None else (0, 0, image.width, image.height)
        q_box = check_box((x1, y1, x2, y2), image.width, image.height, f"the query {path.name}")
        if min(q_box[2] - q_box[0], q_box[3] - q_box[1]) < MIN_QUERY_SIDE:
            raise SeqNetError(
                f"query {path.name}: the person is {q_box[2] - q_box[0]:g} x "
                f"{q_box[3] - q_box[1]:g} pixels; need at least {MIN_QUERY_SIDE} on each side"
            )
        name, n = path.stem, 2
        while name in names:
            name, n = f"{path.stem}_{n}", n + 1
        names.add(name)
        queries.append(Query(name, path.resolve(), image, q_box))
    return queries


def resolve_model(model):
    """``--model``, else ``$SEQNET_MODEL``, else the package ``make demo`` exported."""
    if model:
        path = Path(model)
    elif os.environ.get("SEQNET_MODEL"):
        path = Path(os.environ["SEQNET_MODEL"])
    else:
        path = DEFAULT_MODEL
        if not path.exists():
            raise SeqNetError(
                "no model package: export one with `seqnet-export --ckpt CKPT` and pass "
                "--model PACKAGE (or set SEQNET_MODEL), or run `make demo`"
            )
    if not path.exists():
        raise SeqNetError(f"model package not found: {path}")
    return path


def open_input(path, every):
    """A video file, a folder of images or one image, as a gallery (``seqnet_runtime.gallery``)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_EXTS:
        gallery = ImageGallery([path])
    else:
        gallery = open_gallery(path, every)
    gallery.check()
    return gallery


@dataclass
class Run:
    """What the pass produced."""

    units: dict  # what was processed, to rank
    kept: dict  # complete units, for the index
    frames: int  # frames processed
    partial: bool  # stopped by Ctrl-C
    seconds: float


def _frame_labels(queries, sims, threshold):
    """Each query's best detection in a frame, labelled when at or above ``threshold``."""
    labels = []
    for n, (q, s) in enumerate(zip(queries, sims)):
        if len(s) and s.max() >= threshold:
            j = int(s.argmax())
            labels.append((j, f"{q.name} {s[j]:.2f}", draw.query_colour(n)))
    return labels


def search_pass(session, gallery, queries, cached, writer, *, batch, threshold):
    """Detect (or take from ``cached``, a loaded index) every frame's people, compare them with
    every query (filling each query's ``per_frame``), and hand each drawn frame to ``writer``
    (``video.VideoWriter`` or None). Ctrl-C ends the pass early: what was done is returned."""
    current = gallery.units()
    valid = {k: u for k, u in cached.items() if k in current and u["sig"] == current[k]}
    log.info("gallery index: %d of %d units reused", len(valid), len(current))
    rows, seen, partial, start = {}, [], False, time.perf_counter()
    bar = tqdm(total=gallery.size_hint(list(current)), desc="searching", unit="frame")
    passes = frames_with_detections(session, gallery, valid, batch, writer is not None)
    try:
        for unit, i, t, array, dets in passes:
            if unit not in rows:
                rows[unit] = []
                seen.append(unit)
            rows[unit].append((i, t, dets))
            sims = [dets["embeddings"] @ q.embedding for q in queries]
            for q, s in zip(queries, sims):
                q.per_frame.append((unit, i, t, float(s.max()) if len(s) else None))
            if writer is not None:
                drawn = draw.frame(Image.fromarray(array), dets["boxes"], _frame_labels(
                    queries, sims, threshold))  # fmt: skip
                writer.write(np.asarray(drawn))
            bar.update()
    except KeyboardInterrupt:
        partial = True
        log.warning("stopped: writing what was done (%d frames), marked partial", bar.n)
    finally:
        passes.close()  # stops the decoder
        bar.close()
    complete = seen[:-1] if partial else seen
    units = {k: make_unit(current[k], rows[k], session.dim) for k in seen}
    kept = {k: u for k, u in valid.items() if k not in rows} | {k: units[k] for k in complete}
    return Run(units, kept, bar.n, partial, time.perf_counter() - start)


def run(
    input, query_paths, *, box=None, model=None, backend="auto", device="cpu", precision=None,
    every=1, batch=None, threshold=0.5, topk=10, out="run_output", annotate=True,
):  # fmt: skip
    """The whole command: check every input, load the model, search, write the results.
    Returns the ``Run`` (``partial`` when Ctrl-C stopped it)."""
    if topk < 1:
        raise SeqNetError(f"--topk must be 1 or more, got {topk}")
    if batch is not None and batch < 1:
        raise SeqNetError(f"--batch must be 1 or more, got {batch}")
    if not -1 <= threshold <= 1:
        raise SeqNetError(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
    out = Path(out)
    check_out(out, MARKERS)
    queries = read_queries(query_paths, box)
    gallery = open_input(input, every)
    model = resolve_model(model)
    session = load(model, backend, device=device, precision=precision)
    log.info("backend: %s", session.name)
    for q in queries:
        q.embedding = session.embed(to_array(q.image), q.box[None])[0]
    cached = load_index(out / "index.npz", session.key)
    with staged_dir(out) as tmp:
        writer = None
        if annotate:
            fps = video.frame_rate(gallery.path) / every if _is_video(gallery) else IMAGE_FPS
            writer = video.VideoWriter(tmp / "annotated.mp4", fps)
        try:
            result = search_pass(
                session, gallery, queries, cached, writer,
                batch=batch or session.batch_size, threshold=threshold,
            )  # fmt: skip
        finally:
            if writer is not None:
                writer.close()
        meta = {
            "version": FORMAT_VERSION,
            "input": str(Path(input).resolve()),
            "kind": "video" if _is_video(gallery) else "images",
            "model": str(model.resolve()),
            "backend": session.name,
            "every": every,
            "threshold": threshold,
            "partial": result.partial,
            "frames": result.frames,
            "seconds": round(result.seconds, 2),
        }
        _write(tmp, meta, gallery, queries, result.units, topk, annotate)
        save_index(tmp / "index.npz", result.kept, session.key)
    fps = result.frames / max(result.seconds, 1e-9)
    log.info("%d frames in %.1f s (%.2f frames/s); wrote %s", result.frames, result.seconds, fps,
             out / "index.html")  # fmt: skip
    return result


def _is_video(gallery):
    return isinstance(gallery, VideoGallery)


def _positions(gallery):
    """{unit: its position}: the x axis for a folder of images."""
    return {k: n for n, k in enumerate(gallery.units())}


def _write(out, meta, gallery, queries, units, topk, annotate):
    """matches.json, thumbs/, timeline.png and index.html into the folder ``out``."""
    is_video, position = _is_video(gallery), _positions(gallery)
    (out / "thumbs").mkdir()
    hits = {q.name: rank(units, q.embedding, topk) for q in queries}
    frames = _frames_of(gallery, [h for q_hits in hits.values() for h in q_hits])
    report = {**meta, "queries": []}
    for n, q in enumerate(queries):
        crop = f"thumbs/query_{n}.jpg"
        draw.crop(q.image, q.box).save(out / crop, quality=92)
        shown = []
        for r, h in enumerate(hits[q.name], 1):
            image = frames[(h["unit"], h["frame"])]
            thumb, hit_crop = f"thumbs/q{n}_{r:03d}.jpg", f"thumbs/q{n}_{r:03d}_crop.jpg"
            marked = draw.marked(image, h["box"], f"#{r} {h['score']:.2f}", draw.query_colour(n))
            marked.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 4))
            marked.save(out / thumb, quality=90)
            draw.crop(image, h["box"]).save(out / hit_crop, quality=92)
            where = (
                {"frame": h["frame"], "time": h["time"]}
                if is_video
                else {"image": h["unit"], "frame": position[h["unit"]]}
            )
            shown.append({
                "rank": r, **where, "box": h["box"], "similarity": h["score"],
                "det_score": h["det_score"], "thumb": thumb, "crop": hit_crop,
            })  # fmt: skip
        per_frame = [
            [i if is_video else position[unit], round(t, 3) if is_video else None,
             None if s is None else round(s, 4)]
            for unit, i, t, s in q.per_frame
        ]  # fmt: skip
        report["queries"].append({
            "name": q.name, "image": str(q.path), "box": [float(v) for v in q.box],
            "crop": crop, "embedding": [round(float(v), 6) for v in q.embedding],
            "hits": shown, "per_frame": per_frame,
        })  # fmt: skip
    series = [
        (
            q["name"],
            [f[1] if is_video else f[0] for f in q["per_frame"]],
            [f[2] for f in q["per_frame"]],
        )
        for q in report["queries"]
    ]
    timeline.plot(
        out / "timeline.png", series, meta["threshold"], "seconds" if is_video else "image"
    )
    (out / "matches.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "index.html").write_text(html.run_page(report, annotate), encoding="utf-8")


def _frames_of(gallery, hits):
    """{(unit, frame): PIL image} for the hits' frames, each unit decoded once."""
    wanted = {}
    for h in hits:
        wanted.setdefault(h["unit"], set()).add(h["frame"])
    return {
        (unit, i): im
        for unit, frames in wanted.items()
        for i, _, im in gallery.frames(unit, frames)
    }
