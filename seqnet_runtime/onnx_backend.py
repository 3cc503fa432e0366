"""The ONNX Runtime backend: a graph runner (``seqnet_runtime.runner``) on ONNX Runtime, and
the package session that uses it (``load(package, backend="onnxruntime")``)."""

import onnxruntime as ort

from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.runner import GraphRunner
from seqnet_runtime.session import PackageSession

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def session_options(threads=None):
    """ONNX Runtime options, in one place: ``threads`` intra-op threads (default: ORT's)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    return options


class OrtRunner(GraphRunner):
    """One ONNX graph on ONNX Runtime's CPU or CUDA provider (onnxruntime-gpu for cuda)."""

    name = "onnxruntime"
    devices = tuple(PROVIDERS)

    def __init__(self, path, device="cpu", threads=None):
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise SeqNetError(
                f"ONNX Runtime has no {provider} here (install onnxruntime-gpu for cuda)"
            )
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(threads), providers=[provider]
            )
        except Exception as e:  # ORT raises its own types for corrupt or unsupported graphs
            raise SeqNetError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        if self.session.get_providers()[0] != provider:  # ORT falls back to the CPU silently
            raise SeqNetError(f"{path}: ONNX Runtime runs it on {self.session.get_providers()[0]}")

    def run(self, outputs, feeds):
        return self.session.run(outputs, feeds)


class OnnxSession(PackageSession):
    """A model package on ONNX Runtime (options: ``PackageSession``'s)."""

    runner = OrtRunner
