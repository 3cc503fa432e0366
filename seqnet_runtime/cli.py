"""``seqnet-run INPUT... --query crop.jpg``: find people in a video, a folder of images or an
image, or in a whole archive of them (``seqnet_runtime.archive``).

Needs a model package (``seqnet-export``) and a runtime backend; no PyTorch unless
``--backend torch`` is asked for.
"""

import logging
import sys

import click

from seqnet_runtime.appearances import DEFAULT_GAP
from seqnet_runtime.backend import backends
from seqnet_runtime.cli_common import HELP
from seqnet_runtime.errors import SeqNetError


@click.command(
    context_settings=HELP,
    help="Find people in a video, a folder of images or one image, or in an archive of many "
    "(several inputs, a folder of videos, a glob, --inputs FILE), from crops of them.",
)
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option(
    "--inputs",
    "list_file",
    type=click.Path(),
    help="a file listing inputs, one per line (an archive search)",
)
@click.option(
    "--query",
    "queries",
    multiple=True,
    required=True,
    type=click.Path(),
    help="a crop of the person alone (repeat for several people)",
)
@click.option(
    "--box",
    nargs=4,
    type=float,
    default=None,
    metavar="X1 Y1 X2 Y2",
    help="the person in a full query image instead of a crop (one --query)",
)
@click.option("--model", help="model package [default: $SEQNET_MODEL, else make demo's]")
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", *sorted(backends())]),
)
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16"]),
    help="graphs to run [default: fp16 on cuda where the package has them, else fp32]",
)
@click.option(
    "--graphs",
    default="standard",
    show_default=True,
    type=click.Choice(["standard", "engine"]),
    help="the package's graphs to run: standard, or the engine graphs TensorRT builds",
)
@click.option("--every", default=1, show_default=True, type=int, help="use every N-th frame")
@click.option("--batch", type=int, help="frames per batch [default: the backend's]")
@click.option(
    "--threshold",
    default=0.5,
    show_default=True,
    type=float,
    help="similarity from which a detection is labelled a match",
)
@click.option(
    "--gap",
    default=DEFAULT_GAP,
    show_default=True,
    type=float,
    help="seconds below the threshold (or away) that end an appearance",
)
@click.option("--topk", default=10, show_default=True, type=int, help="best hits per query")
@click.option("--out", default="run_output", show_default=True, help="output folder")
@click.option("--no-video", is_flag=True, help="skip annotated.mp4")
@click.option(
    "--segment",
    type=float,
    help="cut videos into segments of this many seconds, spread over the workers (archive)",
)
@click.option(
    "--ray",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[auto|ADDRESS]",
    help="detect on a Ray cluster: auto starts or joins a local one ('seqnet[cluster]')",
)
@click.option("--workers", type=int, help="Ray workers, a CPU each, a GPU with --device cuda "
              "(--ray; default: one per CPU or GPU that Ray has free)")  # fmt: skip
def main(inputs, list_file, queries, box, model, backend, device, precision, graphs, every, batch,
         threshold, gap, topk, out, no_video, segment, ray, workers):  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from seqnet_runtime.archive import is_archive, search_archive
    from seqnet_runtime.run import run

    options = dict(
        box=box, model=model, backend=backend, device=device, precision=precision,
        graphs=graphs, every=every, batch=batch, threshold=threshold, gap=gap, topk=topk,
        out=out, annotate=not no_video,
    )  # fmt: skip
    try:
        if is_archive(inputs, list_file, segment, ray):
            report = search_archive(inputs, list(queries), list_file=list_file, segment=segment,
                                    ray=ray, workers=workers, **options)  # fmt: skip
            for s in report["skipped"]:
                click.echo(f"seqnet-run: skipped {s['input']}: {s['reason']}", err=True)
            return
        result = run(inputs[0], list(queries), **options)
    except SeqNetError as e:
        sys.exit(f"seqnet-run: error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)
    if result.partial:  # interrupted, as a shell reports Ctrl-C, after writing what was done
        click.echo(f"seqnet-run: stopped after {result.frames} frames; partial results in {out}",
                   err=True)  # fmt: skip
        sys.exit(130)
