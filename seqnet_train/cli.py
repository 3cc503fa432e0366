"""``seqnet <command>``: one entry point, the original's command shapes, KEY VALUE overrides.

Each command's work lives in its own module, imported only when that command runs, so
``seqnet -h`` is instant and a command's heavy imports never slow another's.
"""

import argparse
import importlib
import importlib.util
import logging
import sys

from seqnet_train.errors import SeqNetError

# command -> (module:function that runs it, one-line help)
COMMANDS = {
    "train": ("seqnet_train.engine.train:run", "train (or --eval a checkpoint) as the original train.py"),
    "eval": ("seqnet_train.evaluation.run:run", "evaluate a checkpoint with every standard protocol"),
    "score": ("seqnet_train.evaluation.run:run_score", "score a saved outputs file, no model needed"),
    "demo": ("seqnet_train.apps:run_demo", "draw detections and similarities to a query"),
    "search": ("seqnet_train.apps:run_search", "search a folder of images or a video for a person"),
    "synth": ("seqnet_train.data.synth:run", "write a synthetic CUHK-SYSU, PRW or JSON dataset"),
    "convert": ("seqnet_train.data.convert:run", "convert CUHK-SYSU or PRW into the JSON format"),
    "bench": ("seqnet_train.bench:run", "time inference of the default model on this machine"),
}


def _add_cfg(p, required=True):
    p.add_argument("--cfg", required=required, help="YAML config (e.g. configs/cuhk_sysu.yaml)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def _train_args(p):
    _add_cfg(p)
    p.add_argument("--resume", action="store_true", help="resume from --ckpt or the newest one")
    p.add_argument("--ckpt", help="checkpoint to resume from or to evaluate")
    p.add_argument("--eval", action="store_true", help="evaluate --ckpt instead of training")


def _eval_args(p):
    _add_cfg(p)
    p.add_argument("--ckpt", required=True, help="checkpoint (epoch_N.pth or a bare state dict)")


def _score_args(p):
    _add_cfg(p)
    p.add_argument("--outputs", required=True, help="inference outputs file (.pt or .npz)")
    p.add_argument("--json", help="also write the metrics to this JSON file")


def _demo_args(p):
    _add_cfg(p)
    p.add_argument("--ckpt", required=True, help="checkpoint")
    p.add_argument("--query", help="query image")
    p.add_argument("--box", nargs=4, type=float, metavar=("X1", "Y1", "X2", "Y2"))
    p.add_argument("--gallery", nargs="+", help="gallery images or one folder")
    p.add_argument("--out", default="demo_output", help="folder for the drawn images")
    p.add_argument("--topk", type=int, default=5, help="matches in the summary image")


def _search_args(p):
    _add_cfg(p)
    p.add_argument("--ckpt", required=True, help="checkpoint")
    p.add_argument("--query", required=True, help="query image")
    p.add_argument("--box", nargs=4, type=float, required=True, metavar=("X1", "Y1", "X2", "Y2"))
    p.add_argument("--gallery", required=True, help="folder of images or a video file")
    p.add_argument("--every", type=int, default=1, help="video: use every k-th frame")
    p.add_argument("--topk", type=int, default=20, help="matches to report")
    p.add_argument("--out", default="search_output", help="folder for results.json and index.html")
    p.add_argument("--index", help="gallery index file to share across --out folders")


def _synth_args(p):
    p.add_argument("--format", required=True, choices=["cuhk-sysu", "prw", "json"])
    p.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0, help="same seed and sizes: same bytes")
    p.add_argument("--train-images", type=int, default=200, help="training images")
    p.add_argument("--test-images", type=int, default=100, help="test images (gallery pool)")
    p.add_argument("--train-ids", type=int, default=40, help="labelled training identities")
    p.add_argument("--test-ids", type=int, default=20, help="test identities (disjoint)")
    p.add_argument("--people", type=int, default=4, help="most people per image")
    p.add_argument("--cameras", type=int, default=6, help="cameras (backgrounds, colour casts)")
    p.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))


def _convert_args(p):
    p.add_argument("--format", required=True, choices=["cuhk-sysu", "prw"])
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="JSON file to write")


def _bench_args(p):
    p.add_argument("--quick", action="store_true", help="small images, few repeats")
    p.add_argument("--json", help="also write the results to this file")


ARGS = {
    "train": _train_args,
    "eval": _eval_args,
    "score": _score_args,
    "demo": _demo_args,
    "search": _search_args,
    "synth": _synth_args,
    "convert": _convert_args,
    "bench": _bench_args,
}


def build_parser():
    parser = argparse.ArgumentParser(prog="seqnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        ARGS[name](sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    module, func = COMMANDS[args.command][0].split(":")
    if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None or (
        importlib.util.find_spec(module) is None
    ):
        sys.exit(f"seqnet {args.command}: not available in this version yet")
    handler = getattr(importlib.import_module(module), func)
    try:
        handler(args)
    except SeqNetError as e:
        sys.exit(f"seqnet {args.command}: error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)
