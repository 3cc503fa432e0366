"""``seqnet-run INPUT --query crop.jpg``: find people in a video, a folder of images or an image.

Needs a model package (``seqnet-export``) and ONNX Runtime or TensorRT; no PyTorch unless
``--backend torch`` is asked for.
"""

import logging
import sys

import click

from seqnet_runtime.cli_common import HELP
from seqnet_runtime.errors import SeqNetError


@click.command(
    context_settings=HELP,
    help="Find people in a video, a folder of images or one image, from crops of them.",
)
@click.argument("input", type=click.Path())
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
    type=click.Choice(["auto", "onnxruntime", "torch"]),
)
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16"]),
    help="graphs to run [default: fp16 on cuda where the package has them, else fp32]",
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
@click.option("--topk", default=10, show_default=True, type=int, help="best hits per query")
@click.option("--out", default="run_output", show_default=True, help="output folder")
@click.option("--no-video", is_flag=True, help="skip annotated.mp4")
def main(input, queries, box, model, backend, device, precision, every, batch, threshold, topk,
         out, no_video):  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from seqnet_runtime.run import run

    try:
        result = run(
            input, list(queries), box=box, model=model, backend=backend, device=device,
            precision=precision, every=every, batch=batch, threshold=threshold, topk=topk,
            out=out, annotate=not no_video,
        )  # fmt: skip
    except SeqNetError as e:
        sys.exit(f"seqnet-run: error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)
    if result.partial:  # interrupted, as a shell reports Ctrl-C, after writing what was done
        click.echo(f"seqnet-run: stopped after {result.frames} frames; partial results in {out}",
                   err=True)  # fmt: skip
        sys.exit(130)
