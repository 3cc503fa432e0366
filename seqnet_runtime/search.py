"""Search: find a query person in a folder of images or a video, on any backend's session.

Writes ``results.json``, ``index.html`` (with ``thumbs/``) and ``summary.png`` to ``--out``, all
or nothing. The gallery's detections are kept in an index (``OUT/index/`` or ``--index FOLDER``), so
a second query on the same gallery runs detection only on what changed.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from seqnet_runtime import draw, fs, html
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.gallery import VideoGallery, open_gallery
from seqnet_runtime.images import check_box, read_pil, to_array
from seqnet_runtime.index import IndexWriter, load_index
from seqnet_runtime.stream import Query, search_pass

log = logging.getLogger(__name__)

MARKERS = ("results.json", "index.html")  # an --out holding these is ours to replace
INDEX = "index"  # the gallery index's folder in --out, unless --index is given
THUMB_WIDTH = 640  # full-frame thumbnails are scaled down to this width at most
SUMMARY_MATCHES = 8  # matches shown in summary.png


@dataclass
class Search:
    """A search's inputs, every one validated (see ``prepare``)."""

    query: str
    query_image: object  # PIL image
    box: object  # (4,) float32 array
    gallery: object  # ImageGallery | VideoGallery
    gallery_path: str
    out: Path
    index: Path
    shared_index: bool  # --index given: kept where it is, not in --out
    every: int
    topk: int


def prepare(query, box, gallery, out, *, every=1, topk=20, index=None):
    """Read and check every input before any model loads: each problem is one SeqNetError."""
    if topk < 1:
        raise SeqNetError(f"--topk must be 1 or more, got {topk}")
    out = Path(out)
    fs.check_out(out, MARKERS)
    query_image = read_pil(query)
    box = check_box(box, *query_image.size)
    source = open_gallery(gallery, every)
    source.check()
    index_path = Path(index) if index else out / INDEX
    return Search(
        query, query_image, box, source, gallery, out, index_path, index is not None, every, topk
    )


def search(session, job):
    """Index the gallery with ``session`` (reusing the index where it is valid) in the search
    pass, rank every detection against the query, and write the results folder. Returns the
    matches. Ctrl-C writes nothing."""
    query = Query("query", Path(job.query), job.query_image, job.box)
    query.embedding = session.embed(to_array(job.query_image), job.box[None])[0]
    cached = load_index(job.index, session.key)
    with fs.atomic_dir(job.out) as tmp:
        folder = job.index if job.shared_index else tmp / INDEX
        index = IndexWriter(folder, session.key, session.dim)
        result = search_pass(
            session, job.gallery, [query], cached, batch=session.batch_size, topk=job.topk,
            index=index,
        )  # fmt: skip
        if result.partial:
            raise KeyboardInterrupt
        matches = query.top.hits()
        stats = {"units": result.units, "frames": result.frames, "detections": result.detections}
        _write(tmp, job, matches, stats)
    log.info(
        "searched %d frames (%d people): best %s; wrote %s",
        stats["frames"],
        stats["detections"],
        f"{matches[0]['score']:.3f} in {matches[0]['where']}" if matches else "none",
        job.out / "index.html",
    )
    return matches


def _where(gallery, match):
    name = Path(match["unit"]).name
    if isinstance(gallery, VideoGallery):
        return f"{name} frame {match['frame']} ({match['time']:.2f} s)"
    return name


def _write(out, job, matches, stats):
    """results.json, thumbs/, index.html and summary.png into the folder ``out``."""
    gallery, query_im, box = job.gallery, job.query_image, job.box
    (out / "thumbs").mkdir()
    query_crop = draw.crop(query_im, box)
    query_crop.save(out / "thumbs" / "query.jpg", quality=92)
    frames = gallery.frames_at(matches)
    crops = []
    for n, m in enumerate(matches, 1):
        image = frames[(m["unit"], m["frame"])]
        m["where"] = _where(gallery, m)
        m["thumb"], m["crop"] = f"thumbs/{n:03d}.jpg", f"thumbs/{n:03d}_crop.jpg"
        thumb = draw.marked(image, m["box"], f"#{n} {m['score']:.2f}")
        thumb.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 4))
        thumb.save(out / m["thumb"], quality=90)
        crops.append(draw.crop(image, m["box"]))
        crops[-1].save(out / m["crop"], quality=92)
    shown = [
        (c, f"#{n} {m['score']:.2f}\n{m['where']}")
        for n, (c, m) in enumerate(zip(crops, matches), 1)
    ]
    draw.summary(query_crop, shown[:SUMMARY_MATCHES]).save(out / "summary.png")
    query = {"image": str(Path(job.query).resolve()), "box": box.tolist()}
    video = isinstance(gallery, VideoGallery)
    results = {
        "query": query,
        "gallery": str(Path(job.gallery_path).resolve()),
        **({"every": job.every} if video else {}),
        "indexed": stats,
        "matches": [
            {
                "rank": n,
                ("video" if video else "image"): m["unit"],
                **({"frame": m["frame"], "time": m["time"]} if video else {}),
                **{k: m[k] for k in ("box", "score", "det_score", "thumb", "crop")},
            }
            for n, m in enumerate(matches, 1)
        ],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    note = f", one frame in {job.every}" if video and job.every > 1 else ""
    page = html.page({**query, "crop": "thumbs/query.jpg"}, matches, job.gallery_path, note)
    (out / "index.html").write_text(page, encoding="utf-8")
