"""The OpenVINO backend: a graph runner (``seqnet_runtime.runner``) on OpenVINO's CPU plugin,
and the package session that uses it (``load(package, backend="openvino")``).

fp32 graphs compute in fp32: OpenVINO's CPU plugin otherwise picks bf16 on CPUs with native
bf16 (AVX-512 BF16 or AMX: it did on an AMD EPYC with avx512_bf16), which is not fp32 parity.
Its CPU plugin computes float64 in float32 and int64 in int32; the package graphs are written
so that this changes nothing (seqnet_export.preprocess).
"""

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints

from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.runner import GraphRunner
from seqnet_runtime.session import PackageSession


def _one_line(error):
    """OpenVINO's multi-line exception text -> its most specific line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return lines[-1] if lines else error.__class__.__name__


class OpenVinoRunner(GraphRunner):
    """``OpenVinoRunner(path, device="cpu", threads=None)``: the ONNX graph at ``path`` (its
    external weights beside it), compiled for the CPU with dynamic shapes, fp32, latency."""

    name = "openvino"
    devices = ("cpu",)

    def __init__(self, path, device="cpu", threads=None):
        self.check_device(device)
        path = Path(path)
        if not path.is_file():
            raise SeqNetError(f"{path}: no such graph file")
        config = {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            hints.inference_precision: ov.Type.f32,
        }
        if threads:
            config[props.inference_num_threads] = int(threads)
        try:
            core = ov.Core()
            self.model = core.compile_model(core.read_model(str(path)), "CPU", config)
        except RuntimeError as e:
            raise SeqNetError(f"{path}: OpenVINO cannot load it: {_one_line(e)}") from None
        self.request = self.model.create_infer_request()

    def run(self, outputs, feeds):
        self.request.infer({name: np.asarray(a, order="C") for name, a in feeds.items()})
        return [self.request.get_tensor(name).data.copy() for name in outputs]


class OpenVinoSession(PackageSession):
    """A model package on OpenVINO (options: ``PackageSession``'s)."""

    runner = OpenVinoRunner
