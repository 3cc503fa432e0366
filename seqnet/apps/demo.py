"""``seqnet demo``: draw every detection in a few gallery images with its similarity to a query.

Without ``--query`` it shows the configured dataset's first query against the first images of
its gallery (the query person's own images come first in CUHK-SYSU protocols).
Writes one ``NN_<name>.png`` per gallery image and ``summary.png`` to ``--out``, all or nothing.
"""

import logging
from pathlib import Path

from seqnet.apps import draw
from seqnet.apps.images import check_box, gallery_images, read_pil
from seqnet.apps.output import check_out, staged_dir
from seqnet.apps.session import detect, embed_query, load_model
from seqnet.config import load_cfg
from seqnet.data import load_queries, load_split
from seqnet.errors import SeqNetError

log = logging.getLogger(__name__)

DEFAULT_GALLERY = 4  # gallery images of the built-in default


def default_inputs(cfg, n_gallery=DEFAULT_GALLERY):
    """(query image path, box (4,), gallery paths) from the configured dataset's test split."""
    dataset, root = cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT
    first = load_queries(dataset, root)[0]
    q = first["query"]
    query_path = {r["img_name"]: r["img_path"] for r in load_split(dataset, root, "query")}
    pool = load_split(dataset, root, "gallery")
    paths = {r["img_name"]: r["img_path"] for r in pool}
    if first["gallery"] is not None:  # a fixed gallery: the query person's images come first
        names = [g["img_name"] for g in first["gallery"]]
    else:  # an implicit one (PRW, JSON): images holding the query person first
        others = [r for r in pool if r["img_name"] != q["img_name"]]
        names = [r["img_name"] for r in sorted(others, key=lambda r: q["pid"] not in r["pids"])]
    return query_path[q["img_name"]], q["box"], [paths[n] for n in names[:n_gallery]]


def _inputs(args, cfg):
    if args.query is None:
        if args.box is not None or args.gallery:
            raise SeqNetError("--box and --gallery need --query (or give none for the default)")
        return default_inputs(cfg)
    if args.box is None or not args.gallery:
        raise SeqNetError("--query needs --box X1 Y1 X2 Y2 and --gallery IMG... | DIR")
    return args.query, args.box, gallery_images(args.gallery)


def run(args):
    """CLI entry: read and check every input, detect, then draw."""
    cfg = load_cfg(args.cfg, args.opts)
    if args.topk < 1:
        raise SeqNetError(f"--topk must be 1 or more, got {args.topk}")
    out = Path(args.out)
    check_out(out, ["summary.png"])
    query_path, box, paths = _inputs(args, cfg)
    query_im = read_pil(query_path)
    box = check_box(box, *query_im.size)
    gallery = [read_pil(p) for p in paths]

    model, device = load_model(cfg, args.ckpt)
    query = embed_query(model, device, query_im, box)
    batch = cfg.INPUT.BATCH_SIZE_TEST
    dets = [
        d
        for i in range(0, len(gallery), batch)
        for d in detect(model, device, gallery[i : i + batch])
    ]

    matches = []  # (similarity, gallery index, box)
    with staged_dir(out) as tmp:
        for n, (path, image, det) in enumerate(zip(paths, gallery, dets)):
            sims = det["embeddings"] @ query
            best = int(sims.argmax()) if len(sims) else None
            name = f"{n:02d}_{Path(path).stem}.png"
            draw.detections(image, det["boxes"], sims, best).save(tmp / name)
            matches += [(float(s), n, b) for s, b in zip(sims, det["boxes"])]
            log.info(
                "%s: %d people, best similarity %s",
                Path(path).name,
                len(sims),
                f"{float(sims[best]):.3f}" if best is not None else "-",
            )
        top = sorted(matches, key=lambda m: -m[0])[: args.topk]
        crops = [
            (draw.crop(gallery[n], b), f"#{r} {s:.2f}\n{Path(paths[n]).name}")
            for r, (s, n, b) in enumerate(top, 1)
        ]
        draw.summary(draw.crop(query_im, box), crops).save(tmp / "summary.png")
    log.info("wrote %d images and summary.png to %s", len(gallery), out)
