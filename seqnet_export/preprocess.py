"""The model's pre-processing as ONNX nodes, so that a package's graphs take plain images.

torchvision's GeneralizedRCNNTransform (what SeqNet trains and predicts with), for one image
of H x W, in eval mode:

1. normalise: ``(image - mean) / std`` per channel (float32);
2. resize: ``scale = min(MIN / min(H, W), MAX / max(H, W))`` in float64 (Python floats), the
   new size ``floor(H * scale) x floor(W * scale)`` (``F.interpolate`` with
   ``recompute_scale_factor=True``), bilinear with ``align_corners=False`` and no antialias,
   written as Gather / Mul / Add with PyTorch's source coordinates and weights (ONNX Resize
   reaches the same coordinates by another float path, an ulp away: up to 1e-3 on edges);
3. pad: zeros at the bottom and right up to a multiple of 32.

The size rule gives float64's answer exactly (a float32 product would round some short sides
up to MIN where torchvision floors them to MIN - 1: 201 x 268 -> 900 x 1200 instead of 899 x
1200 at 900/1500), in integers below 2**23 (``_size_nodes``), for engines that do not compute
the graph as written: OpenVINO's CPU plugin (2026.4) computes float64 in float32, int64 in
int32 and integer Div/Mod through a float32 division, and it computed ``Div(MIN,
ReduceMin(hw))`` with its operands swapped (480 x 640 at 128/192: scale 3.33, not 0.267);
TensorRT has no float64. The nodes feed the exported network's ``pixels``, ``resized_hw`` and
``original_hw`` inputs. Images of one call share their size, so each image is resized and padded
as it would be alone.

The ``engine`` flavour (``preprocess_nodes(..., engine=True)``) computes neither the size rule
nor the source coordinates: TensorRT has no float64, and PyTorch's coordinate is a float32
fused multiply-add whose one rounding float32 arithmetic cannot reproduce in general. The host
computes both (``seqnet_runtime.package.Preprocess.resize_axis``, float64 as here) and feeds
each axis's rows and weights (RESIZE_INPUTS); the resized size is their length (a shape, so
TensorRT sees no shape-tensor input), and the graph does the same Gathers, products and sums.
"""

import functools

import numpy as np
from onnx import TensorProto, helper, numpy_helper

IMAGE_INPUT = "images"
NETWORK_INPUTS = ("pixels", "resized_hw", "original_hw")
# the engine flavour's resize, fed by the host (seqnet_runtime.package.Preprocess.resize_axis):
# per axis (2, n) int64 source rows/columns (i0, i1) and (2, n) float32 weights (l0, l1)
RESIZE_INPUTS = ("resize_y_index", "resize_y_weight", "resize_x_index", "resize_x_weight")
SIZE_DIVISIBLE = 32


def resized_size(height, width, min_size, max_size):
    """(h, w) after the resize step (torchvision's rule, float64)."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return int(np.floor(height * scale)), int(np.floor(width * scale))


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


EXACT_BELOW = 2**23  # integers a float32 division splits exactly (OpenVINO divides int32 so)


def _float64_error(c, d):
    """(e, k) of the float64 quotient q = fl(c / d): ``e = floor(log2(c / d))`` and ``k = (c /
    d - q) * d * 2**(52 - e)``, an integer with ``|k| <= d / 2`` (positive: q is below c / d)."""
    e = c.bit_length() - d.bit_length()  # floor(log2(c / d)) or one more
    if (c << max(-e, 0)) < (d << max(e, 0)):
        e -= 1
    num, den = (c / d).as_integer_ratio()  # den: a power of two
    k, rest = divmod((c * den - d * num) << (52 - e), den)  # 52 - e >= 52 - 13
    assert rest == 0 and 2 * abs(k) <= d
    return e, k


@functools.lru_cache(maxsize=8)
def _k_table(min_size, max_size, big):
    """``k`` of ``_float64_error`` for C = MIN then C = MAX, each for d = 1 ... big."""
    return [_float64_error(c, d)[1] for c in (min_size, max_size) for d in range(1, big + 1)]


def _size_nodes(p, min_size, max_size):
    """(nodes, initializers) computing ``p + "new_hw"`` (int64 (2,)) from ``p + "hw"``, equal
    to ``resized_size``: ``floor(X * fl(C / d))`` in float64 for X in (H, W), where ``C / d``
    is ``MIN / min(H, W)`` or ``MAX / max(H, W)``, whichever is smaller.

    In integers: ``N = X * C // d`` is the answer unless ``d`` divides ``X * C`` (otherwise
    ``X * C / d`` is at least ``1 / d`` from an integer, far beyond float64's error). Then
    ``X * q = N - X * k * 2**(e - 52) / d`` (``_float64_error``), which float64 rounds below N
    (and floor to N - 1) when that gap exceeds half its spacing below N, ``2**(E - 53)`` with
    ``E = floor(log2(N - 1))``: ``2 * N * k > C * 2**(E - e)``. ``k`` comes from a table per
    ``d`` up to ``D``, the longest side for which every integer here stays below 2**23 (exact
    through a float32 division; ``D`` = 5592 at 900/1500, at most 8192). An image with a longer
    side takes the float64 formula itself (exact on ONNX Runtime; an engine that computes
    float64 in float32 is off by one pixel on about 5% of such sizes).

    A numpy copy of this arithmetic equalled ``resized_size`` on every size from 1 x 1 to 3000
    x 3000 and on 6 million random ones up to ``D`` (MIN/MAX 900/1500, 800/1333, 128/192,
    1024/2048 and others); tests/test_openvino.py runs the nodes on OpenVINO and ONNX Runtime.
    """
    if int(min_size) != min_size or int(max_size) != max_size:
        raise ValueError(f"the size rule takes whole MIN/MAX sizes, got {min_size}/{max_size}")
    min_size, max_size = int(min_size), int(max_size)
    if not 1 <= min(min_size, max_size) <= max(min_size, max_size) < 2**14:
        raise ValueError(f"MIN/MAX sizes must lie in 1 ... 16383, got {min_size}/{max_size}")
    big = min(8192, (EXACT_BELOW - 1) // max(min_size, max_size))  # D
    e_hi = max(min_size, max_size).bit_length() - 1  # e <= e_hi
    e_lo = min(min_size, max_size).bit_length() - 1 - big.bit_length()  # e >= e_lo (d <= D)
    errors = _k_table(min_size, max_size, big)
    q = p + "size/"
    i64 = np.int64
    inits = [
        _const(q + "i0", np.array([0], i64)),
        _const(q + "i1", np.array([1], i64)),
        _const(q + "i2", np.array([2], i64)),
        _const(q + "zero", np.array([0], i64)),
        _const(q + "min", np.array([min_size], i64)),
        _const(q + "max", np.array([max_size], i64)),
        _const(q + "big", np.array([big], i64)),
        _const(q + "k_table", np.array(errors, np.int32)),  # [C is MAX][d - 1]
        _const(q + "pow2_e", np.array([2.0**i for i in range(e_lo, e_hi + 1)], np.float32)),
        _const(q + "pow2_n", np.array([[2**i for i in range(e_hi + 1)]], i64)),  # N <= C
        _const(q + "minus_e_hi1", np.array([-e_hi - 1], i64)),
        _const(q + "pow2_x", np.array([2**i for i in range(e_hi - e_lo + 1)], i64)),
        _const(q + "x_cap", np.array([e_hi - e_lo], i64)),
        _const(q + "min_f64", np.array([min_size], np.float64)),
        _const(q + "max_f64", np.array([max_size], np.float64)),
    ]
    n = helper.make_node
    return [
        n("Slice", [p + "hw", q + "i0", q + "i1"], [q + "h"]),
        n("Slice", [p + "hw", q + "i1", q + "i2"], [q + "w"]),
        n("Min", [q + "h", q + "w"], [q + "short"]),  # elementwise: no Reduce to fuse into
        n("Max", [q + "h", q + "w"], [q + "long"]),
        # MIN / short <= MAX / long: the short side's scale (equal: either)
        n("Mul", [q + "long", q + "min"], [q + "long_min"]),
        n("Mul", [q + "short", q + "max"], [q + "short_max"]),
        n("LessOrEqual", [q + "long_min", q + "short_max"], [q + "by_short"]),
        n("Where", [q + "by_short", q + "min", q + "max"], [q + "C"]),
        n("Where", [q + "by_short", q + "short", q + "long"], [q + "d_raw"]),
        n("Max", [q + "d_raw", q + "i1"], [q + "d"]),  # an empty image divides by 1, not 0
        # k from the table: row (C is MAX), column d - 1
        n("Where", [q + "by_short", q + "zero", q + "big"], [q + "row"]),
        n("Min", [q + "d", q + "big"], [q + "d_in"]),
        n("Add", [q + "row", q + "d_in"], [q + "index_1"]),
        n("Sub", [q + "index_1", q + "i1"], [q + "index"]),
        n("Gather", [q + "k_table", q + "index"], [q + "k32"], axis=0),
        n("Cast", [q + "k32"], [q + "k"], to=TensorProto.INT64),
        # t = e_hi - e: how many of 2**e_lo ... 2**e_hi exceed C / d (exact in float32)
        n("Cast", [q + "d"], [q + "d_f"], to=TensorProto.FLOAT),
        n("Cast", [q + "C"], [q + "C_f"], to=TensorProto.FLOAT),
        n("Mul", [q + "d_f", q + "pow2_e"], [q + "d_pow2"]),
        n("Greater", [q + "d_pow2", q + "C_f"], [q + "above"]),
        n("Cast", [q + "above"], [q + "above_i"], to=TensorProto.INT64),
        n("ReduceSum", [q + "above_i"], [q + "t"], keepdims=1),
        # per side: N = X * C // d, less one where float64 rounds X * q below N
        n("Mul", [p + "hw", q + "C"], [q + "num"]),
        n("Div", [q + "num", q + "d"], [q + "N"]),
        n("Mul", [q + "N", q + "d"], [q + "Nd"]),
        n("Sub", [q + "num", q + "Nd"], [q + "rem"]),
        n("Equal", [q + "rem", q + "zero"], [q + "exact"]),
        n("Sub", [q + "N", q + "i1"], [q + "N_1"]),
        n("Unsqueeze", [q + "N_1", q + "i1"], [q + "N_1_col"]),
        n("LessOrEqual", [q + "pow2_n", q + "N_1_col"], [q + "below"]),
        n("Cast", [q + "below"], [q + "below_i"], to=TensorProto.INT64),
        n("ReduceSum", [q + "below_i", q + "i1"], [q + "E1"], keepdims=0),  # E + 1
        # Reduce outputs go into Add / Min / Max only (OpenVINO fused a Div with them swapped)
        n("Add", [q + "E1", q + "minus_e_hi1"], [q + "E_e_hi"]),
        n("Add", [q + "E_e_hi", q + "t"], [q + "x_raw"]),  # E - e
        n("Max", [q + "x_raw", q + "zero"], [q + "x_pos"]),
        n("Min", [q + "x_pos", q + "x_cap"], [q + "x"]),
        n("Gather", [q + "pow2_x", q + "x"], [q + "pow2_E_e"], axis=0),
        n("Mul", [q + "pow2_E_e", q + "C"], [q + "rhs"]),
        n("Mul", [q + "N", q + "k"], [q + "Nk"]),
        n("Add", [q + "Nk", q + "Nk"], [q + "lhs"]),
        n("Greater", [q + "lhs", q + "rhs"], [q + "below_N"]),
        n("And", [q + "exact", q + "below_N"], [q + "bump"]),
        n("Cast", [q + "bump"], [q + "bump_i"], to=TensorProto.INT64),
        n("Sub", [q + "N", q + "bump_i"], [q + "new_hw_int"]),
        # a side longer than D: the float64 formula as torchvision writes it
        n("Cast", [p + "hw"], [q + "hw_f64"], to=TensorProto.DOUBLE),
        n("Cast", [q + "short"], [q + "short_f64"], to=TensorProto.DOUBLE),
        n("Cast", [q + "long"], [q + "long_f64"], to=TensorProto.DOUBLE),
        n("Div", [q + "min_f64", q + "short_f64"], [q + "scale_short"]),
        n("Div", [q + "max_f64", q + "long_f64"], [q + "scale_long"]),
        n("Min", [q + "scale_short", q + "scale_long"], [q + "scale"]),
        n("Mul", [q + "hw_f64", q + "scale"], [q + "new_hw_f64"]),
        n("Floor", [q + "new_hw_f64"], [q + "new_hw_floor"]),
        n("Cast", [q + "new_hw_floor"], [q + "new_hw_f"], to=TensorProto.INT64),
        n("Greater", [q + "long", q + "big"], [q + "beyond"]),
        n("Where", [q + "beyond", q + "new_hw_f", q + "new_hw_int"], [p + "new_hw"]),
    ], inits


def _axis_weights_nodes(p, axis, size_in, size_out):
    """Nodes computing one axis's source rows (i0, i1) and weights (l0, l1) as PyTorch's
    ``upsample_bilinear2d`` does (align_corners=False, no scale given): ``scale = in / out``
    (float32), ``src = max(scale * (dst + 0.5) - 0.5, 0)``, ``i0 = floor(src)``,
    ``i1 = i0 + (i0 < in - 1)``, ``l1 = clamp(src - i0, 0, 1)``, ``l0 = 1 - l1``.

    PyTorch's CPU kernel computes ``src`` with a fused multiply-add (one rounding); the product
    is exact in float64, so float64 then one cast to float32 gives the same value."""
    q = f"{p}{axis}/"
    n = helper.make_node
    return [
        n("Cast", [size_in], [q + "in_f"], to=TensorProto.FLOAT),
        n("Cast", [size_out], [q + "out_f"], to=TensorProto.FLOAT),
        n("Div", [q + "in_f", q + "out_f"], [q + "scale"]),
        n("Cast", [q + "scale"], [q + "scale_f64"], to=TensorProto.DOUBLE),
        n("Range", [p + "s0", size_out, p + "s1"], [q + "dst"]),
        n("Cast", [q + "dst"], [q + "dst_f64"], to=TensorProto.DOUBLE),
        n("Add", [q + "dst_f64", p + "half_f64"], [q + "centre"]),
        n("Mul", [q + "scale_f64", q + "centre"], [q + "scaled"]),  # exact in float64
        n("Sub", [q + "scaled", p + "half_f64"], [q + "shifted_f64"]),
        n("Cast", [q + "shifted_f64"], [q + "shifted"], to=TensorProto.FLOAT),  # one rounding
        n("Max", [q + "shifted", p + "f0"], [q + "src"]),
        n("Floor", [q + "src"], [q + "src_floor"]),
        n("Cast", [q + "src_floor"], [q + "i0"], to=TensorProto.INT64),
        n("Sub", [size_in, p + "s1"], [q + "last"]),
        n("Less", [q + "i0", q + "last"], [q + "inner"]),
        n("Cast", [q + "inner"], [q + "step"], to=TensorProto.INT64),
        n("Add", [q + "i0", q + "step"], [q + "i1"]),
        n("Cast", [q + "i0"], [q + "i0_f"], to=TensorProto.FLOAT),
        n("Sub", [q + "src", q + "i0_f"], [q + "frac"]),
        n("Clip", [q + "frac", p + "f0", p + "f1"], [q + "l1"]),
        n("Sub", [p + "f1", q + "l1"], [q + "l0"]),
    ]


def _axis_inputs_nodes(p, axis):
    """The engine flavour's axis rows and weights, from the host-fed ``RESIZE_INPUTS``
    (``seqnet_runtime.package.Preprocess.resize_axis``: the same arithmetic in float64 on the
    host, no float64 in the graph)."""
    q = f"{p}{axis}/"
    index, weight = f"resize_{axis}_index", f"resize_{axis}_weight"
    n = helper.make_node
    return [
        n("Gather", [index, p + "s0"], [q + "i0"], axis=0),
        n("Gather", [index, p + "s1"], [q + "i1"], axis=0),
        n("Gather", [weight, p + "s0"], [q + "l0"], axis=0),
        n("Gather", [weight, p + "s1"], [q + "l1"], axis=0),
    ]


def _bilinear_nodes(p, image, hw, new_hw, out):
    """Bilinear resize of ``image`` (B, C, H, W) to ``new_hw`` with PyTorch's sampling rule
    (``_axis_weights_nodes``)."""
    n = helper.make_node
    nodes = [
        n("Gather", [hw, p + "s0"], [p + "h_in"], axis=0),
        n("Gather", [hw, p + "s1"], [p + "w_in"], axis=0),
        n("Gather", [new_hw, p + "s0"], [p + "h_out"], axis=0),
        n("Gather", [new_hw, p + "s1"], [p + "w_out"], axis=0),
    ]
    nodes += _axis_weights_nodes(p, "y", p + "h_in", p + "h_out")
    nodes += _axis_weights_nodes(p, "x", p + "w_in", p + "w_out")
    return nodes + _interpolate_nodes(p, image, out)


def _interpolate_nodes(p, image, out):
    """The resize itself from each axis's rows ``i0``, ``i1`` and weights ``l0``, ``l1``
    (``{p}y/``, ``{p}x/``), in PyTorch's order of operations: each output is ``(x00 * w0 +
    x01 * w1) * h0 + (x10 * w0 + x11 * w1) * h1`` (ONNX Resize computes its source coordinates
    differently: off by an ulp, which moves pixels by up to 1e-3 on sharp edges)."""
    n = helper.make_node
    y, x = p + "y/", p + "x/"
    nodes = [
        n("Unsqueeze", [y + "l0", p + "i1"], [y + "w0"]),  # (h', 1) against (..., h', w')
        n("Unsqueeze", [y + "l1", p + "i1"], [y + "w1"]),
        n("Gather", [image, y + "i0"], [p + "top"], axis=2),
        n("Gather", [image, y + "i1"], [p + "bottom"], axis=2),
    ]
    for row in ("top", "bottom"):
        nodes += [
            n("Gather", [p + row, x + "i0"], [p + row + "_left"], axis=3),
            n("Gather", [p + row, x + "i1"], [p + row + "_right"], axis=3),
            n("Mul", [p + row + "_left", x + "l0"], [p + row + "_a"]),
            n("Mul", [p + row + "_right", x + "l1"], [p + row + "_b"]),
            n("Add", [p + row + "_a", p + row + "_b"], [p + row + "_row"]),
        ]
    nodes += [
        n("Mul", [p + "top_row", y + "w0"], [p + "top_w"]),
        n("Mul", [p + "bottom_row", y + "w1"], [p + "bottom_w"]),
        n("Add", [p + "top_w", p + "bottom_w"], [out]),
    ]
    return nodes


def preprocess_nodes(min_size, max_size, mean, std, prefix="preprocess/", engine=False):
    """(nodes, initializers) computing NETWORK_INPUTS from IMAGE_INPUT (B, 3, H, W) float32 in
    [0, 1]; ``engine``: from IMAGE_INPUT and the host-fed RESIZE_INPUTS (no size rule, no
    float64 in the graph: the engine flavour)."""
    p = prefix
    inits = [
        _const(p + "mean", np.asarray(mean, np.float32).reshape(1, 3, 1, 1)),
        _const(p + "std", np.asarray(std, np.float32).reshape(1, 3, 1, 1)),
        _const(p + "i2", np.array([2], np.int64)),
        _const(p + "i4", np.array([4], np.int64)),
        _const(p + "div", np.array([SIZE_DIVISIBLE], np.int64)),
        _const(p + "div_1", np.array([SIZE_DIVISIBLE - 1], np.int64)),
        _const(p + "zeros6", np.zeros(6, np.int64)),
        _const(p + "pad_value", np.array(0.0, np.float32)),
        _const(p + "s0", np.array(0, np.int64)),
        _const(p + "s1", np.array(1, np.int64)),
        _const(p + "i1", np.array([1], np.int64)),
    ]
    if not engine:  # the in-graph source coordinates (_axis_weights_nodes)
        inits += [
            _const(p + "f0", np.array(0.0, np.float32)),
            _const(p + "f1", np.array(1.0, np.float32)),
            _const(p + "half_f64", np.array(0.5, np.float64)),
        ]
    n = helper.make_node
    if engine:
        # the resized size is the host-fed rows' and columns' count (shapes, not values: no
        # shape tensor input for TensorRT)
        size_inits = []
        resize = [
            *_axis_inputs_nodes(p, "y"),
            *_axis_inputs_nodes(p, "x"),
            n("Shape", [p + "y/i0"], [p + "new_h"]),
            n("Shape", [p + "x/i0"], [p + "new_w"]),
            n("Concat", [p + "new_h", p + "new_w"], [p + "new_hw"], axis=0),
            *_interpolate_nodes(p, p + "normalised", p + "resized"),
        ]
    else:
        size_nodes, size_inits = _size_nodes(p, min_size, max_size)
        resize = [
            *size_nodes,
            *_bilinear_nodes(p, p + "normalised", p + "hw", p + "new_hw", p + "resized"),
        ]
    nodes = [
        n("Shape", [IMAGE_INPUT], [p + "shape"]),
        n("Slice", [p + "shape", p + "i2", p + "i4"], [p + "hw"]),
        n("Sub", [IMAGE_INPUT, p + "mean"], [p + "centred"]),
        n("Div", [p + "centred", p + "std"], [p + "normalised"]),
        *resize,
        n("Add", [p + "new_hw", p + "div_1"], [p + "round_up"]),
        n("Div", [p + "round_up", p + "div"], [p + "blocks"]),
        n("Mul", [p + "blocks", p + "div"], [p + "padded_hw"]),
        n("Sub", [p + "padded_hw", p + "new_hw"], [p + "pad_hw"]),
        n("Concat", [p + "zeros6", p + "pad_hw"], [p + "pads"], axis=0),
        n(
            "Pad",
            [p + "resized", p + "pads", p + "pad_value"],
            [NETWORK_INPUTS[0]],
            mode="constant",
        ),
        n("Cast", [p + "new_hw"], [NETWORK_INPUTS[1]], to=TensorProto.FLOAT),
        n("Cast", [p + "hw"], [NETWORK_INPUTS[2]], to=TensorProto.FLOAT),
    ]
    return nodes, inits + size_inits


def resize_inputs():
    """The engine flavour's RESIZE_INPUTS as graph inputs (ValueInfoProto)."""
    out = []
    for axis, size in (("y", "resized_height"), ("x", "resized_width")):
        out += [
            helper.make_tensor_value_info(f"resize_{axis}_index", TensorProto.INT64, [2, size]),
            helper.make_tensor_value_info(f"resize_{axis}_weight", TensorProto.FLOAT, [2, size]),
        ]
    return out


def with_preprocessing(model, min_size, max_size, mean, std, engine=False):
    """``model`` (taking NETWORK_INPUTS first) rewritten to take IMAGE_INPUT instead (and, for
    the ``engine`` flavour, RESIZE_INPUTS after it), in place."""
    graph = model.graph
    inputs = [i.name for i in graph.input]
    if tuple(inputs[:3]) != NETWORK_INPUTS:
        raise ValueError(f"expected the network inputs {NETWORK_INPUTS} first, got {inputs}")
    nodes, inits = preprocess_nodes(min_size, max_size, mean, std, engine=engine)
    rest = list(graph.input)[3:]
    image = helper.make_tensor_value_info(
        IMAGE_INPUT, TensorProto.FLOAT, ["batch", 3, "height", "width"]
    )
    del graph.input[:]
    graph.input.extend([image] + (resize_inputs() if engine else []) + rest)
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    graph.initializer.extend(inits)
    return model


def preprocess_model(min_size, max_size, mean, std, opset=18, engine=False):
    """The pre-processing alone as a model (IMAGE_INPUT -> NETWORK_INPUTS; ``engine``: with
    RESIZE_INPUTS), for tests."""
    nodes, inits = preprocess_nodes(min_size, max_size, mean, std, engine=engine)
    outputs = [
        helper.make_tensor_value_info(NETWORK_INPUTS[0], TensorProto.FLOAT, None),
        helper.make_tensor_value_info(NETWORK_INPUTS[1], TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info(NETWORK_INPUTS[2], TensorProto.FLOAT, [2]),
    ]
    image = helper.make_tensor_value_info(
        IMAGE_INPUT, TensorProto.FLOAT, ["batch", 3, "height", "width"]
    )
    inputs = [image] + (resize_inputs() if engine else [])
    graph = helper.make_graph(nodes, "preprocess", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def size_model(min_size, max_size, opset=18):
    """The size rule alone as a model: ``hw`` (2,) int64 -> ``new_hw`` (2,) int64, for tests."""
    nodes, inits = _size_nodes("", min_size, max_size)
    hw = helper.make_tensor_value_info("hw", TensorProto.INT64, [2])
    new_hw = helper.make_tensor_value_info("new_hw", TensorProto.INT64, [2])
    graph = helper.make_graph(nodes, "size_rule", [hw], [new_hw], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
