"""``seqnet <command>``: one entry point, the original's command shapes, KEY VALUE overrides.

Each command's work lives in its own module, imported only when that command runs (see
``seqnet_runtime.cli_common.run``), so ``seqnet -h`` is instant and never imports torch. Every
handler receives the parsed options as an argparse-like namespace (``args.cfg``, ``args.opts``...).
"""

import re
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import click

from seqnet_runtime import cli_common
from seqnet_runtime.backend import backends

# command -> the module:function that runs it
COMMANDS = {
    "train": "seqnet_train.engine.train:run",
    "eval": "seqnet_train.evaluation.run:run",
    "score": "seqnet_train.evaluation.run:run_score",
    "demo": "seqnet_train.apps:run_demo",
    "search": "seqnet_train.apps:run_search",
    "synth": "seqnet_train.data.synth:run",
    "convert": "seqnet_train.data.convert:run",
}

# Trailing KEY VALUE overrides: everything from the first KEY on is one (argparse.REMAINDER's
# shape), so values such as -1 are never read as options.
OVERRIDES = {"ignore_unknown_options": True, "allow_interspersed_args": False}
EPILOG = "KEY VALUE...: config overrides, e.g. SOLVER.BASE_LR 0.01"


class _Group(click.Group):
    def list_commands(self, ctx):
        return list(self.commands)  # as defined (the workflow's order), not alphabetical


@click.group(
    help="SeqNet person search: make data, train, evaluate, score and search. Commands that"
    " read a config take trailing KEY VALUE overrides of its keys.",
    context_settings={**cli_common.HELP, "show_default": True},
    cls=_Group,
)
def seqnet():
    pass


def _run(**params):
    """Run the current command's handler with ``params`` as a namespace of lists, as argparse
    gave them (click gives tuples)."""
    ctx = click.get_current_context()
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    cli_common.run(ctx.command_path, COMMANDS[ctx.info_name], SimpleNamespace(**args))


def _check_overrides(ctx, param, opts):
    # Parsing stops at the first KEY; an unknown option before it would land here as a "KEY".
    if opts and opts[0].startswith("-"):
        names = [n for p in ctx.command.params for n in getattr(p, "opts", ())]
        raise click.NoSuchOption(opts[0], possibilities=names, ctx=ctx)
    return opts


def _cfg():
    """``--cfg`` and the trailing overrides (``args.opts``), for commands that read a config."""

    def add(f):
        f = click.argument(
            "opts", nargs=-1, type=click.UNPROCESSED, metavar="[KEY VALUE]...",
            callback=_check_overrides,
        )(f)  # fmt: skip
        return click.option(
            "--cfg", required=True, help="YAML config (e.g. configs/cuhk_sysu.yaml)"
        )(f)

    return add


def _command(name, help, cls=click.Command, overrides=True):
    settings = OVERRIDES if overrides else {}
    epilog = EPILOG if overrides else None
    return seqnet.command(name, help=help, epilog=epilog, context_settings=settings, cls=cls)


BOX = dict(nargs=4, type=float, metavar="X1 Y1 X2 Y2")


@_command("train", "train (or --eval a checkpoint) as the original train.py")
@_cfg()
@click.option("--resume", is_flag=True, help="resume from --ckpt or the newest one")
@click.option("--ckpt", help="checkpoint to resume from or to evaluate")
@click.option("--eval", is_flag=True, help="evaluate --ckpt instead of training")
def train(**params):
    _run(**params)


@_command("eval", "evaluate a checkpoint, or a model package, with every standard protocol")
@_cfg()
@click.option("--ckpt", help="checkpoint (epoch_N.pth or a bare state dict), for --backend torch")
@click.option(
    "--backend", default="torch", type=click.Choice(sorted(backends())),
    help="run the checkpoint on PyTorch, or a model package (--model) on a runtime backend",
)  # fmt: skip
@click.option("--model", help="model package (seqnet-export), for the runtime backends")
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "int8", "bf16"]),
    help="the package's precision to run [default: fp16 on cuda where it has it, else fp32]",
)  # fmt: skip
@click.option(
    "--graphs", default="standard", show_default=True, type=click.Choice(["standard", "engine"]),
    help="the package's graphs: standard, or the engine graphs TensorRT builds",
)  # fmt: skip
def eval_(**params):
    _run(**params)


@_command("score", "score a saved outputs file, no model needed")
@_cfg()
@click.option("--outputs", required=True, help="inference outputs file (.pt or .npz)")
@click.option("--json", help="also write the metrics to this JSON file")
def score(**params):
    _run(**params)


_OPTION = re.compile(r"-(?!\d*\.?\d+$).")  # an option, not a negative number or "-"


class _DemoCommand(click.Command):
    """Reads ``--gallery a.jpg b.jpg c.jpg`` as argparse's ``nargs="+"`` did: every word after
    ``--gallery`` up to the next option (click options take a fixed number of values, so they
    are rewritten as ``--gallery a.jpg --gallery b.jpg ...`` for a ``multiple`` option). The
    overrides are left alone: the rewrite stops where they start, at the first bare word that
    no option takes."""

    def parse_args(self, ctx, args):
        takes = {
            n: p.nargs
            for p in self.params
            if isinstance(p, click.Option) and not p.is_flag and not p.count
            for n in p.opts
        }
        words, out = list(args), []
        while words:
            word = words.pop(0)
            if word == "--gallery":
                n = next((i for i, w in enumerate(words) if _OPTION.match(w)), len(words))
                if n == 0:
                    raise click.BadOptionUsage(word, "Option '--gallery' requires a value.", ctx)
                out += [x for w in words[:n] for x in (word, w)]
                del words[:n]
            elif word in takes:
                out += [word, *words[: takes[word]]]
                del words[: takes[word]]
            elif word.startswith("-"):
                out.append(word)  # a flag, -h, --name=value or an unknown option
            else:
                out += [word, *words]  # the overrides
                break
        return super().parse_args(ctx, out)


@_command("demo", "draw detections and similarities to a query", cls=_DemoCommand)
@_cfg()
@click.option("--ckpt", required=True, help="checkpoint")
@click.option("--query", help="query image")
@click.option("--box", **BOX, help="the person in the query image")
@click.option("--gallery", multiple=True, metavar="IMG...|DIR", help="gallery images or one folder")
@click.option("--out", default="demo_output", help="folder for the drawn images")
@click.option("--topk", type=int, default=5, help="matches in the summary image")
def demo(**params):
    _run(**{**params, "gallery": list(params["gallery"]) or None})


@_command("search", "search a folder of images or a video for a person")
@_cfg()
@click.option("--ckpt", required=True, help="checkpoint")
@click.option("--query", required=True, help="query image")
@click.option("--box", **BOX, required=True, help="the person in the query image")
@click.option("--gallery", required=True, help="folder of images or a video file")
@click.option("--every", type=int, default=1, help="video: use every k-th frame")
@click.option("--topk", type=int, default=20, help="matches to report")
@click.option("--out", default="search_output", help="folder for results.json and index.html")
@click.option("--index", help="gallery index folder to share across --out folders")
def search(**params):
    _run(**params)


@_command("synth", "write a synthetic CUHK-SYSU, PRW or JSON dataset, or a video", overrides=False)
@click.option("--format", required=True, type=click.Choice(["cuhk-sysu", "prw", "json", "video"]))
@click.option("--out", required=True, help="folder to write (must not exist or be empty)")
@click.option("--seed", type=int, default=0, help="same seed and sizes: same bytes")
@click.option("--train-images", type=int, default=200, help="training images")
@click.option("--test-images", type=int, default=100, help="test images (gallery pool)")
@click.option("--train-ids", type=int, default=40, help="labelled training identities")
@click.option("--test-ids", type=int, default=20, help="test identities (disjoint)")
@click.option("--people", type=int, default=4, help="most people per image")
@click.option("--cameras", type=int, default=6, help="cameras (backgrounds, colour casts)")
@click.option("--size", type=int, nargs=2, default=(240, 320), metavar="H W", help="image size")
@click.option("--frames", type=int, default=150, help="video: frames")
@click.option("--fps", type=int, default=10, help="video: frames per second")
@click.option("--queries", type=int, default=3, help="video: people to search for (query crops)")
def synth(**params):
    if params["format"] == "video":  # the dataset's test identities walking (same seed, ids)
        target = "seqnet_train.data.synth_video:run"
        cli_common.run(click.get_current_context().command_path, target, SimpleNamespace(**params))
        return
    _run(**params)


@_command("convert", "convert CUHK-SYSU or PRW into the JSON format", overrides=False)
@click.option("--format", required=True, type=click.Choice(["cuhk-sysu", "prw"]))
@click.option("--root", required=True, help="dataset folder")
@click.option("--out", required=True, help="JSON file to write")
def convert(**params):
    _run(**params)


@seqnet.command(
    "bench",
    help="FPS of every backend against the PyTorch baseline: benchmarks/fps.py, whose options"
    " (-h) it takes",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fps.py"
    if not script.is_file():
        sys.exit("seqnet bench: error: needs the repository's benchmarks/ (a source checkout)")
    runpy.run_path(str(script))["main"](list(args), prog="seqnet bench")


def main(argv=None):
    """``seqnet``'s console script; also ``main([...])`` from Python, which returns on success."""
    cli_common.main(seqnet, argv, prog="seqnet")
