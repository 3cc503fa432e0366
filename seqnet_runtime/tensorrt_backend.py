"""The TensorRT backend: a graph runner (``seqnet_runtime.runner``) on a TensorRT engine, and
the package session that uses it (``load(package, backend="tensorrt")``).

Torch-free: the engine runs through TensorRT's named-tensor API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) on a CUDA stream, with device memory, pinned host
buffers and copies from cuda-python (``cuda.bindings``). It runs the package's ``engine``
graphs, built by ``seqnet-export --engine`` (``seqnet_export.engine``) with full TensorRT
10/11 (``tensorrt``) or TensorRT-RTX (``tensorrt_rtx_bindings``); everything else (sizes,
thresholds, the host-computed resize, slicing the fixed-K outputs, CBGM, batching) is the
shared ``PackageSession``'s, which the backend-conformance suite runs on the same engine graphs
through ONNX Runtime.

The engine is chosen from the manifest: the graph flavour's engine for this GPU's compute
capability, built by an installed library of the same version. Where none can run, one line
says why and what to do (``unavailable``).
"""

import ctypes
import importlib
import importlib.util
import re

import numpy as np

from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.runner import GraphRunner
from seqnet_runtime.session import PackageSession

LIBRARIES = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt_rtx_bindings"}
RTX_TARGETS = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")
ENGINE_FILE = re.compile(r"\.(?P<library>tensorrt(?:_rtx)?)-(?P<version>[^-]+)\.engine$")
INSTALL = "pip install 'seqnet[tensorrt]'"


def _library(name):
    """The Python module of TensorRT library ``name`` (tensorrt or tensorrt_rtx)."""
    return importlib.import_module(LIBRARIES[name])


def _cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise SeqNetError(
            f"the tensorrt backend needs cuda-python (cuda.bindings): {INSTALL}"
        ) from None
    return runtime


def _check(result, what):
    """The values of a cuda-python call's ``(err, *values)``; an error is a SeqNetError."""
    err, *values = result if isinstance(result, tuple) else (result,)
    cudart = _cudart()
    if err != cudart.cudaError_t.cudaSuccess:
        raise SeqNetError(f"CUDA: {what} failed: {getattr(err, 'name', err)}")
    return values[0] if len(values) == 1 else values


def gpu():
    """(``smXY``, GPU name) of CUDA device 0; a SeqNetError in one line where there is none."""
    cudart = _cudart()
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as e:  # noqa: BLE001 - no driver library at all
        err, count = f"{type(e).__name__}: {e}", 0
    if err != cudart.cudaError_t.cudaSuccess or not count:
        why = (
            "no CUDA device" if err == cudart.cudaError_t.cudaSuccess else getattr(err, "name", err)
        )
        raise SeqNetError(
            f"the tensorrt backend needs an NVIDIA GPU and driver, and none is usable here "
            f"({why}); run the package with --backend onnxruntime (or openvino) instead"
        )
    props = _check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
    return f"sm{props.major}{props.minor}", str(name).strip("\0 ")


def installed():
    """{library name: version} of the TensorRT libraries that import here."""
    out = {}
    for name, module in LIBRARIES.items():
        if importlib.util.find_spec(module) is None:
            continue
        try:
            out[name] = importlib.import_module(module).__version__
        except (ImportError, OSError, AttributeError):
            continue
    return out


def choose_engine(manifest, flavour, graph, target, gpu_name, libraries):
    """The manifest's Engine for ``graph`` of ``flavour`` on a ``target`` GPU, built by one of
    ``libraries`` ({name: version}) of the same version; else a SeqNetError saying what to do."""
    engines = [e for e in manifest.engines if e.flavour == flavour and e.graph == graph]
    how = f"seqnet-export --engine --gpu-arch {target}"
    if target not in RTX_TARGETS:
        how += " with full TensorRT 10/11 on such a GPU (TensorRT-RTX does not target it)"
    if not engines:
        raise SeqNetError(
            f"the package has no TensorRT engine of its {flavour} {graph} graph; build them: {how}"
        )
    here = [e for e in engines if e.target == target]
    if not here:
        have = ", ".join(sorted({e.target for e in engines}))
        raise SeqNetError(
            f"the package has no TensorRT engine for this GPU ({gpu_name}, {target}; it has "
            f"{have}); build one: {how}"
        )
    for engine in here:
        if libraries.get(engine.library) == engine.version:
            return engine
    built = ", ".join(sorted({f"{e.library} {e.version}" for e in here}))
    have = ", ".join(f"{k} {v}" for k, v in libraries.items()) or "no TensorRT"
    raise SeqNetError(
        f"the package's {target} engines were built by {built}, and this machine has {have}: "
        f"an engine runs only with the version that built it; install that one ({INSTALL} "
        f"for TensorRT-RTX) or rebuild them here: {how}"
    )


class _Buffer:
    """Device memory and a pinned host buffer of at least ``nbytes``, grown on demand."""

    def __init__(self):
        self.nbytes = 0
        self.device = self.host = 0

    def fit(self, nbytes):
        cudart = _cudart()
        nbytes = max(int(nbytes), 1)
        if nbytes > self.nbytes:
            self.free()
            self.device = _check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            self.host = _check(cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            self.nbytes = nbytes
        return self

    def view(self, dtype, shape):
        """The pinned host buffer as a numpy array."""
        count = int(np.prod(shape, dtype=np.int64))
        raw = (ctypes.c_byte * max(count * np.dtype(dtype).itemsize, 1)).from_address(self.host)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def free(self):
        if self.nbytes:
            cudart = _cudart()
            cudart.cudaFree(self.device)
            cudart.cudaFreeHost(self.host)
            self.nbytes = 0


class TensorRTRunner(GraphRunner):
    """One engine (``graph_file`` picks it from the manifest) on CUDA device 0."""

    name = "tensorrt"
    devices = ("cuda",)

    @classmethod
    def graph_file(cls, package, manifest, flavour, graph, device):
        target, gpu_name = gpu()
        engine = choose_engine(manifest, flavour, graph, target, gpu_name, installed())
        return package / engine.file

    def __init__(self, path, device="cuda", threads=None):
        match = ENGINE_FILE.search(path.name)
        if match is None:
            raise SeqNetError(f"{path.name}: not a TensorRT engine file of a package")
        trt = _library(match["library"])
        cudart = _cudart()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.ERROR)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise SeqNetError(
                f"{path.name}: {match['library']} {trt.__version__} cannot load it (corrupt, or "
                "built for another GPU or version): rebuild it with seqnet-export --engine"
            )
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.buffers = {n: _Buffer() for n in names}
        self.profile = {
            n: [tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0)]
            for n in self.inputs
            if -1 in tuple(self.engine.get_tensor_shape(n))
        }
        if "images" in self.profile:
            self.max_batch = self.profile["images"][2][0]
        if "boxes" in self.profile:
            self.max_boxes = self.profile["boxes"][2][1]

    def run(self, outputs, feeds):
        cudart = _cudart()
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:
            array = np.asarray(feeds[name], dtype=self.dtypes[name])  # 0-d stays 0-d
            if not self.context.set_input_shape(name, array.shape):
                low, _, high = self.profile.get(name, (None, None, None))
                raise SeqNetError(
                    f"{name} of shape {array.shape} is outside the engine's profile "
                    f"({low} ... {high}): export with a wider one, or use smaller inputs"
                )
            buffer = self.buffers[name].fit(array.nbytes)
            buffer.view(array.dtype, array.shape)[...] = array
            _check(cudart.cudaMemcpyAsync(buffer.device, buffer.host, array.nbytes, h2d,
                                          self.stream), "cudaMemcpyAsync")  # fmt: skip
            self.context.set_tensor_address(name, buffer.device)
        shapes = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise SeqNetError(f"the engine's output {name} has no fixed shape: {shape}")
            shapes[name] = shape
            nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtypes[name].itemsize
            self.context.set_tensor_address(name, self.buffers[name].fit(nbytes).device)
        if not self.context.execute_async_v3(int(self.stream)):
            raise SeqNetError("TensorRT: execute_async_v3 failed (see the log above)")
        for name in outputs:
            nbytes = int(np.prod(shapes[name], dtype=np.int64)) * self.dtypes[name].itemsize
            buffer = self.buffers[name]
            _check(cudart.cudaMemcpyAsync(buffer.host, buffer.device, nbytes, d2h, self.stream),
                   "cudaMemcpyAsync")  # fmt: skip
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return [self.buffers[n].view(self.dtypes[n], shapes[n]).copy() for n in outputs]

    def __del__(self):
        try:
            for buffer in getattr(self, "buffers", {}).values():
                buffer.free()
            if getattr(self, "stream", None) is not None:
                _cudart().cudaStreamDestroy(self.stream)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class TensorRTSession(PackageSession):
    """A model package's TensorRT engines (options: ``PackageSession``'s; device ``cuda``, fp16
    where the package has it). TensorRT runs the engines built from the ``engine`` graphs
    whichever ``graphs`` is asked (``standard``, the command lines' default, or ``engine``)."""

    runner = TensorRTRunner

    def __init__(self, package, device="cuda", precision=None, graphs="engine", **options):
        if graphs not in ("standard", "engine"):
            raise SeqNetError(f"graphs must be 'standard' or 'engine', got {graphs!r}")
        graphs = "engine"
        self.runner.check_device(device)
        gpu()  # no GPU: the one line, before anything else
        if not installed():
            raise SeqNetError(f"no TensorRT is installed: {INSTALL} (or full TensorRT 10/11)")
        super().__init__(package, device=device, precision=precision, graphs=graphs, **options)
