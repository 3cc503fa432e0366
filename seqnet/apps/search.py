"""``seqnet search``: find a query person in a folder of images or a video.

Writes ``results.json``, ``index.html`` (with ``thumbs/``) and ``summary.png`` to ``--out``, all
or nothing. The gallery's detections are kept in an index (``OUT/index.pt`` or ``--index``), so
a second query on the same gallery runs detection only on what changed.
"""

import functools
import json
import logging
from pathlib import Path

from seqnet.apps import draw, html
from seqnet.apps.gallery import VideoGallery, open_gallery
from seqnet.apps.images import check_box, read_pil
from seqnet.apps.index import load_index, rank, save_index, update_index
from seqnet.apps.output import check_out, staged_dir
from seqnet.apps.session import detect, embed_query, load_model, model_key
from seqnet.config import load_cfg
from seqnet.errors import SeqNetError

log = logging.getLogger(__name__)

MARKERS = ("results.json", "index.html")  # an --out holding these is ours to replace
THUMB_WIDTH = 640  # full-frame thumbnails are scaled down to this width at most
SUMMARY_MATCHES = 8  # matches shown in summary.png


def _where(gallery, match):
    name = Path(match["unit"]).name
    if isinstance(gallery, VideoGallery):
        return f"{name} frame {match['frame']} ({match['time']:.2f} s)"
    return name


def _frames_of(gallery, matches):
    """{(unit, frame): PIL image} for the matched frames, each unit decoded once."""
    wanted = {}
    for m in matches:
        wanted.setdefault(m["unit"], set()).add(m["frame"])
    return {
        (unit, i): im
        for unit, frames in wanted.items()
        for i, _, im in gallery.frames(unit, frames)
    }


def _write(out, args, gallery, query_im, box, matches, stats):
    """results.json, thumbs/, index.html and summary.png into the folder ``out``."""
    (out / "thumbs").mkdir()
    query_crop = draw.crop(query_im, box)
    query_crop.save(out / "thumbs" / "query.jpg", quality=92)
    frames = _frames_of(gallery, matches)
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
    query = {"image": str(Path(args.query).resolve()), "box": box.tolist()}
    video = isinstance(gallery, VideoGallery)
    results = {
        "query": query,
        "gallery": str(Path(args.gallery).resolve()),
        **({"every": args.every} if video else {}),
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
    note = f", one frame in {args.every}" if video and args.every > 1 else ""
    page = html.page({**query, "crop": "thumbs/query.jpg"}, matches, args.gallery, note)
    (out / "index.html").write_text(page, encoding="utf-8")


def run(args):
    """CLI entry: validate every input, index the gallery, rank, write the results."""
    cfg = load_cfg(args.cfg, args.opts)
    if args.topk < 1:
        raise SeqNetError(f"--topk must be 1 or more, got {args.topk}")
    out = Path(args.out)
    check_out(out, MARKERS)
    index_path = Path(args.index) if args.index else out / "index.pt"
    query_im = read_pil(args.query)
    box = check_box(args.box, *query_im.size)
    gallery = open_gallery(args.gallery, args.every)
    gallery.check()

    model, device = load_model(cfg, args.ckpt)
    key = model_key(cfg, args.ckpt)
    units = update_index(
        load_index(index_path, key),
        gallery,
        functools.partial(detect, model, device),
        cfg.INPUT.BATCH_SIZE_TEST,
    )
    matches = rank(units, embed_query(model, device, query_im, box), args.topk)
    stats = {
        "units": len(units),
        "frames": sum(len(u["frames"]) for u in units.values()),
        "detections": sum(len(u["boxes"]) for u in units.values()),
    }
    with staged_dir(out) as tmp:
        _write(tmp, args, gallery, query_im, box, matches, stats)
        save_index(tmp / "index.pt" if args.index is None else index_path, units, key)
    log.info(
        "searched %d frames (%d people): best %s; wrote %s",
        stats["frames"],
        stats["detections"],
        f"{matches[0]['score']:.3f} in {matches[0]['where']}" if matches else "none",
        out / "index.html",
    )
