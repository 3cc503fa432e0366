"""The seam between a model package and an inference engine: a *graph runner*.

A runner loads one graph of a package (or the engine built from it) and maps named input
arrays to named output arrays; it knows nothing of images, thresholds or detections, which
``seqnet_runtime.session.PackageSession`` handles once for every engine. ONNX Runtime,
OpenVINO and TensorRT are runners; a new engine is a new runner and nothing else.
"""

from seqnet_runtime.errors import SeqNetError


class GraphRunner:
    """One loaded graph: ``Runner(path, device="cpu", threads=None)`` then ``run``.

    Subclasses set ``name`` (the backend's name, as ``--backend`` spells it) and ``devices``,
    and implement ``__init__`` and ``run``. ``graph_file`` picks the file a runner loads
    (the ONNX graph by default; an engine runner picks its engine).
    """

    name = "?"
    devices = ("cpu",)
    max_batch = None  # the most images one call takes (an engine's profile), None: any
    max_boxes = None  # the most query boxes per image one embed call takes, None: any

    def __init__(self, path, device="cpu", threads=None):
        raise NotImplementedError

    def run(self, outputs, feeds):
        """``[array for each name in outputs]`` from ``feeds`` {input name: numpy array}."""
        raise NotImplementedError

    @classmethod
    def graph_file(cls, package, manifest, flavour, graph, device):
        """Path of what this runner loads for ``graph`` ("detect" or "embed") of the graph
        flavour ``flavour`` (``manifest.graphs`` key: fp32, fp16, engine, int8 ...)."""
        return package / manifest.graphs[flavour][graph].file

    @classmethod
    def check_device(cls, device):
        if device not in cls.devices:
            raise SeqNetError(
                f"the {cls.name} backend runs on {', '.join(cls.devices)}, not {device!r}"
            )
