"""``seqnet-run``: find one or more people in a video, a folder of images or one image.

One streaming pass (``seqnet_runtime.stream``) detects everyone in every processed frame and
compares them with every query; the output folder (written all or nothing) holds
``matches.json``, ``annotated.mp4``, ``timeline.png``, ``index.html`` with ``thumbs/``, and the
gallery index ``index.npz``, so that the next query on the same input and model detects
nothing again. Ctrl-C stops the pass and writes what was done, marked partial.
"""

import logging
import os
from pathlib import Path

import numpy as np

from seqnet_runtime import draw, fs, html, timeline, video
from seqnet_runtime.appearances import DEFAULT_GAP, group_appearances, image_appearances, to_json
from seqnet_runtime.backend import load
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.gallery import ImageGallery, VideoGallery, open_gallery
from seqnet_runtime.images import IMAGE_EXTS, check_box, read_pil, to_array
from seqnet_runtime.index import IndexWriter, load_index
from seqnet_runtime.stream import Query, search_pass

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # of matches.json; 2 added appearances and gap
MARKERS = ("matches.json",)  # an --out holding this is ours to replace
INDEX = "index"  # the gallery index's folder in --out
DEFAULT_MODEL = Path("demo_output/model")  # what `make demo` exports
MIN_QUERY_SIDE = 16  # pixels: smaller crops hold too little of a person to search for
IMAGE_FPS = 2  # frames per second of annotated.mp4 for a folder of images
THUMB_WIDTH = 640
APPEARANCES_SHOWN = 10  # per query on the page (matches.json has them all)
STRIP = 6  # crops in an appearance's thumbnail strip


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


def check_options(*, every, batch, threshold, gap, topk):
    """The search options, each problem one SeqNetError line."""
    if topk < 1:
        raise SeqNetError(f"--topk must be 1 or more, got {topk}")
    if every < 1:
        raise SeqNetError(f"--every must be 1 or more, got {every}")
    if batch is not None and batch < 1:
        raise SeqNetError(f"--batch must be 1 or more, got {batch}")
    if not -1 <= threshold <= 1:
        raise SeqNetError(f"--threshold is a cosine similarity in [-1, 1], got {threshold}")
    if gap < 0:
        raise SeqNetError(f"--gap is in seconds, 0 or more, got {gap}")


def open_session(model, backend, device, precision, graphs, queries):
    """The session on ``model`` (resolved as ``resolve_model``), with the queries embedded."""
    model = resolve_model(model)
    options = {} if graphs == "standard" else {"graphs": graphs}  # the torch backend has none
    session = load(model, backend, device=device, precision=precision, **options)
    log.info("backend: %s", session.name)
    for q in queries:
        q.embedding = session.embed(to_array(q.image), q.box[None])[0]
    return session, model


def search_into(folder, session, gallery, queries, cached, meta, *, batch, topk, annotate):
    """The search pass over ``gallery`` (detections from ``cached`` where valid) and every
    output, the index included, into ``folder``. ``meta``: what matches.json starts with
    (input, model, every, threshold, gap ...). Returns (the pass's Run, the report)."""
    result = search_pass(
        session, gallery, queries, cached, batch=batch or session.batch_size, topk=topk,
        index=IndexWriter(folder / INDEX, session.key, session.dim), track=_is_video(gallery),
    )  # fmt: skip
    meta = {
        "version": FORMAT_VERSION,
        **meta,
        "kind": "video" if _is_video(gallery) else "images",
        "backend": session.name,
        "partial": result.partial,
        "frames": result.frames,
    }
    return result, write_outputs(folder, meta, gallery, queries, result.tracks, annotate)


def run(
    input, query_paths, *, box=None, model=None, backend="auto", device="cpu", precision=None,
    graphs="standard", every=1, batch=None, threshold=0.5, gap=DEFAULT_GAP, topk=10,
    out="run_output", annotate=True,
):  # fmt: skip
    """The whole command on one input: check every input, load the model, search, write the
    results. Returns the pass's ``Run`` (``partial`` when Ctrl-C stopped it)."""
    check_options(every=every, batch=batch, threshold=threshold, gap=gap, topk=topk)
    out = Path(out)
    fs.check_out(out, MARKERS)
    queries = read_queries(query_paths, box)
    gallery = open_input(input, every)
    session, model = open_session(model, backend, device, precision, graphs, queries)
    cached = load_index(out / INDEX, session.key)
    meta = {"input": str(Path(input).resolve()), "model": str(model.resolve()), "every": every,
            "threshold": threshold, "gap": gap}  # fmt: skip
    with fs.atomic_dir(out) as tmp:
        result, _ = search_into(
            tmp, session, gallery, queries, cached, meta, batch=batch, topk=topk,
            annotate=annotate,
        )  # fmt: skip
    fps = result.frames / max(result.seconds, 1e-9)
    log.info("%d frames in %.1f s (%.2f frames/s); wrote %s", result.frames, result.seconds, fps,
             out / "index.html")  # fmt: skip
    return result


def _is_video(gallery):
    return isinstance(gallery, VideoGallery)


def _positions(gallery):
    """{unit: its position}: the x axis for a folder of images."""
    return {k: n for n, k in enumerate(gallery.units())}


def appearances_of(n, query, gallery, tracks, threshold, gap):
    """The ``n``-th query's appearances (``seqnet_runtime.appearances``): in a video, its
    tracks' records (``seqnet_runtime.tracks``) grouped in time; in a folder, one per matching
    image (its position as the frame)."""
    if _is_video(gallery):
        log = tracks.get(next(iter(gallery.units())))
        return group_appearances(log.records(n, threshold) if log else [], threshold, gap=gap)
    position = _positions(gallery)
    return image_appearances([(position[u], None, s, b) for u, _, _, s, b in query.per_frame],
                             threshold)  # fmt: skip


def write_outputs(out, meta, gallery, queries, tracks, annotate):
    """Everything but the index into the folder ``out``, from the pass's results (``tracks``:
    its ``Run.tracks``): annotated.mp4 (when ``annotate``), matches.json, thumbs/,
    timeline.png and index.html."""
    found = {
        q.name: appearances_of(n, q, gallery, tracks, meta["threshold"], meta["gap"])
        for n, q in enumerate(queries)
    }
    if annotate:
        every = meta["every"]
        fps = video.frame_rate(gallery.path) / every if _is_video(gallery) else IMAGE_FPS
        annotate_video(out / "annotated.mp4", fps, gallery, out / INDEX, queries, found)
    is_video, position = _is_video(gallery), _positions(gallery)
    unit_at = {n: k for k, n in position.items()}
    video_unit = next(iter(gallery.units())) if is_video else None
    (out / "thumbs").mkdir()
    hits = {q.name: q.top.hits() for q in queries}
    strips = {q.name: [_strip(a) for a in found[q.name][:APPEARANCES_SHOWN]] for q in queries}
    wanted = [h for q_hits in hits.values() for h in q_hits]
    for q in queries:  # each shown appearance's best frame and strip
        for a, strip in zip(found[q.name], strips[q.name]):
            unit = video_unit if is_video else unit_at[a.first]
            for frame in [a.best[0], *(f for f, _ in strip)]:
                wanted.append({"unit": unit, "frame": frame if is_video else -1})
    frames = gallery.frames_at(wanted)
    report = {**meta, "queries": []}
    for n, q in enumerate(queries):
        crop = f"thumbs/query_{n}.jpg"
        draw.crop(q.image, q.box).save(out / crop, quality=92)
        shown = []
        for r, h in enumerate(hits[q.name], 1):
            image = frames[(h["unit"], h["frame"])]
            thumb, hit_crop = f"thumbs/q{n}_{r:03d}.jpg", f"thumbs/q{n}_{r:03d}_crop.jpg"
            _thumbnail(image, h["box"], f"#{r} {h['score']:.2f}", n).save(out / thumb, quality=90)
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
        seen = to_json(found[q.name])
        for r, (a, strip) in enumerate(zip(seen, strips[q.name]), 1):
            unit = video_unit if is_video else unit_at[a["first"]]
            if not is_video:
                a["image"] = unit
            key = (unit, a["best"]["frame"] if is_video else -1)
            stem = f"thumbs/q{n}_a{r:03d}"
            label = f"{q.name} {a['best']['similarity']:.2f}"
            _thumbnail(frames[key], a["best"]["box"], label, n).save(
                out / f"{stem}.jpg", quality=90
            )
            draw.crop(frames[key], a["best"]["box"]).save(out / f"{stem}_crop.jpg", quality=92)
            a["thumb"], a["crop"], a["strip"] = f"{stem}.jpg", f"{stem}_crop.jpg", []
            for s, (frame, box) in enumerate(strip):
                name = f"{stem}_s{s}.jpg"
                image = frames[(unit, frame if is_video else -1)]
                draw.crop(image, box).resize((48, 96)).save(out / name, quality=85)
                a["strip"].append(name)
        per_frame = [
            [i if is_video else position[unit], round(t, 3) if is_video else None,
             None if s is None else round(s, 4)]
            for unit, i, t, s, _ in q.per_frame
        ]  # fmt: skip
        report["queries"].append({
            "name": q.name, "image": str(q.path), "box": [float(v) for v in q.box],
            "crop": crop, "embedding": [round(float(v), 6) for v in q.embedding],
            "appearances": seen, "hits": shown, "per_frame": per_frame,
        })  # fmt: skip
    series = [
        (
            q["name"],
            [f[1] if is_video else f[0] for f in q["per_frame"]],
            [f[2] for f in q["per_frame"]],
        )
        for q in report["queries"]
    ]
    spans = {
        n: [
            (a["start"], a["end"]) if is_video else (a["first"], a["last"])
            for a in q["appearances"]
        ]
        for n, q in enumerate(report["queries"])
    }
    timeline.plot(
        out / "timeline.png", series, meta["threshold"], "seconds" if is_video else "image", spans
    )
    fs.write_json(out / "matches.json", report, indent=1)
    fs.write_text(out / "index.html", html.run_page(report, annotate))
    return report


def _thumbnail(image, box, label, n):
    marked = draw.marked(image, box, label, draw.query_colour(n))
    marked.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 4))
    return marked


def _strip(appearance):
    """Up to STRIP (frame, box) of an appearance's track, evenly spread, boxes known."""
    track = [(f, box) for f, _, box, _ in appearance.track if box is not None]
    if len(track) <= STRIP:
        return track
    return [track[round(k * (len(track) - 1) / (STRIP - 1))] for k in range(STRIP)]


def annotate_video(path, fps, gallery, index_folder, queries, found):
    """``annotated.mp4``: every processed frame (its detections from the index, stopped units
    included) with each query's box labelled in the frames of the query's appearances."""
    units = load_index(index_folder, partial=True)
    video_unit = next(iter(gallery.units())) if _is_video(gallery) else None
    unit_at = {n: k for k, n in _positions(gallery).items()}
    marked = []  # per query: {(unit, frame): (box, similarity)} on its appearances' tracks
    for q in queries:
        marked.append({
            (video_unit, f) if video_unit else (unit_at[f], -1): (box, sim)
            for a in found[q.name] for f, _, box, sim in a.track if box is not None
        })  # fmt: skip
    writer = video.VideoWriter(path, fps)
    try:
        for key in gallery.units():
            if key not in units:
                continue
            for (i, _, dets), (_, _, image) in zip(units[key].rows(), gallery.frames(key)):
                labels = []
                for n, q in enumerate(queries):
                    if (key, i) in marked[n] and len(dets["boxes"]):
                        box, sim = marked[n][(key, i)]
                        j = int(np.abs(dets["boxes"] - np.asarray(box)).sum(axis=1).argmin())
                        labels.append((j, f"{q.name} {sim:.2f}", draw.query_colour(n)))
                writer.write(np.asarray(draw.frame(image, dets["boxes"], labels)))
    finally:
        writer.close()
