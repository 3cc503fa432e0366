"""``seqnet-export --ckpt epoch_19.pth [--fp16]``: a checkpoint becomes a verified model package.

Click only at import (``-h`` is instant); the export itself is ``seqnet_export.run``.
"""

from types import SimpleNamespace

import click

from seqnet_runtime import cli_common

DEFAULT_OPSET = 18  # seqnet_export.export.DEFAULT_OPSET (not imported: it pulls in torch)


@click.command(
    context_settings=cli_common.HELP,
    help="Export a SeqNet checkpoint to an ONNX model package (graphs, manifest.json), verified "
    "on ONNX Runtime against the PyTorch model.",
)
@click.option("--ckpt", required=True, help="checkpoint (ours carry their config)")
@click.option("--cfg", help="config YAML; needed for a released checkpoint, which carries none")
@click.option("--fp16", is_flag=True, help="also fp16 graphs (fp32 boxes, NMS, norms), checked")
@click.option("--out", help="package folder [default: CKPT's name + _package, beside it]")
@click.option("--opset", default=DEFAULT_OPSET, show_default=True, type=int, help="ONNX opset")
@click.option(
    "--engine-graphs",
    is_flag=True,
    help="also the engine graph flavour: what TensorRT builds (standard-op RoIAlign, NMS and "
    "top-k, fixed K, no float64), verified on ONNX Runtime",
)
@click.option(
    "--engine",
    is_flag=True,
    help="also build TensorRT engines from the engine graphs (implies --engine-graphs): "
    "TensorRT-RTX on any machine, full TensorRT 10/11 on the GPU they will run on",
)
@click.option(
    "--gpu-arch",
    help="engine targets, e.g. sm80,sm86,sm89,sm120, or all [default: this GPU, else all that "
    "TensorRT-RTX builds on a CPU]",
)
@click.option(
    "--int8",
    is_flag=True,
    help="also int8 graphs: QDQ, the convolutional trunk only (boxes, RoIAlign, NMS, norms "
    "fp32), calibrated on --calib / --calib-video frames [default: synthetic scenes], checked",
)
@click.option("--calib", type=click.Path(), help="folder of images to calibrate --int8 on")
@click.option("--calib-video", type=click.Path(), help="video to calibrate --int8 on")
@click.option("--calib-frames", type=int, help="frames to calibrate --int8 on [default: 8]")
@click.option(
    "--verify-images",
    type=click.Path(),
    help="folder of images to verify on [default: synthetic scenes]",
)
@click.option("--force", is_flag=True, help="write the package even if parity fails (marked so)")
@click.option("--threads", type=int, help="CPU threads for PyTorch and ONNX Runtime")
def command(**options):
    cli_common.run("seqnet-export", "seqnet_export.run:run", SimpleNamespace(**options))


def main(argv=None):
    cli_common.main(command, argv, prog="seqnet-export")
