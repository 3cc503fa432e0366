"""``seqnet search`` and ``seqnet demo``: the runtime's search app on the PyTorch backend.

The config is read first and every input checked before the model loads, so a typo costs no
model load.
"""

from seqnet_runtime import demo, search
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.images import gallery_images
from seqnet_train.backend import TorchSession
from seqnet_train.config import load_cfg
from seqnet_train.data import load_queries, load_split

DEFAULT_GALLERY = 4  # gallery images of the demo's built-in default


def run_search(args):
    """``seqnet search --cfg --ckpt --query --box --gallery [--every --topk --out --index]``."""
    cfg = load_cfg(args.cfg, args.opts)
    job = search.prepare(
        args.query, args.box, args.gallery, args.out,
        every=args.every, topk=args.topk, index=args.index,
    )  # fmt: skip
    search.search(TorchSession(args.ckpt, cfg), job)


def run_demo(args):
    """``seqnet demo --cfg --ckpt [--query --box --gallery] [--out --topk]``; without a query,
    the configured dataset's first query against the first images of its gallery."""
    cfg = load_cfg(args.cfg, args.opts)
    if args.query is None:
        if args.box is not None or args.gallery:
            raise SeqNetError("--box and --gallery need --query (or give none for the default)")
        query, box, paths = default_inputs(cfg)
    elif args.box is None or not args.gallery:
        raise SeqNetError("--query needs --box X1 Y1 X2 Y2 and --gallery IMG... | DIR")
    else:
        query, box, paths = args.query, args.box, gallery_images(args.gallery)
    job = demo.prepare(query, box, paths, args.out, args.topk)
    demo.demo(TorchSession(args.ckpt, cfg), job)


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
