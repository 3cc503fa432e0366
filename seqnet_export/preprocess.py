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

The nodes compute the size rule in float64 (exactly as Python does; a float32 product would
round some short sides up to MIN where torchvision floors them to MIN - 1) and feed the
exported network's ``pixels``, ``resized_hw`` and ``original_hw`` inputs. Images of one call
share their size, so each image is resized and padded as it would be alone.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

IMAGE_INPUT = "images"
NETWORK_INPUTS = ("pixels", "resized_hw", "original_hw")
SIZE_DIVISIBLE = 32


def resized_size(height, width, min_size, max_size):
    """(h, w) after the resize step (torchvision's rule, float64)."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return int(np.floor(height * scale)), int(np.floor(width * scale))


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


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


def _bilinear_nodes(p, image, hw, new_hw, out):
    """Bilinear resize of ``image`` (B, C, H, W) to ``new_hw`` with PyTorch's sampling rule
    and its order of operations: each output is ``(x00 * w0 + x01 * w1) * h0 + (x10 * w0 +
    x11 * w1) * h1`` (ONNX Resize computes its source coordinates differently: off by an ulp,
    which moves pixels by up to 1e-3 on sharp edges)."""
    n = helper.make_node
    nodes = [
        n("Gather", [hw, p + "s0"], [p + "h_in"], axis=0),
        n("Gather", [hw, p + "s1"], [p + "w_in"], axis=0),
        n("Gather", [new_hw, p + "s0"], [p + "h_out"], axis=0),
        n("Gather", [new_hw, p + "s1"], [p + "w_out"], axis=0),
    ]
    nodes += _axis_weights_nodes(p, "y", p + "h_in", p + "h_out")
    nodes += _axis_weights_nodes(p, "x", p + "w_in", p + "w_out")
    y, x = p + "y/", p + "x/"
    nodes += [
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


def preprocess_nodes(min_size, max_size, mean, std, prefix="preprocess/"):
    """(nodes, initializers) computing NETWORK_INPUTS from IMAGE_INPUT (B, 3, H, W) float32 in
    [0, 1]."""
    p = prefix
    inits = [
        _const(p + "mean", np.asarray(mean, np.float32).reshape(1, 3, 1, 1)),
        _const(p + "std", np.asarray(std, np.float32).reshape(1, 3, 1, 1)),
        _const(p + "min_size", np.array([min_size], np.float64)),
        _const(p + "max_size", np.array([max_size], np.float64)),
        _const(p + "i0", np.array([0], np.int64)),
        _const(p + "i2", np.array([2], np.int64)),
        _const(p + "i4", np.array([4], np.int64)),
        _const(p + "div", np.array([SIZE_DIVISIBLE], np.int64)),
        _const(p + "div_1", np.array([SIZE_DIVISIBLE - 1], np.int64)),
        _const(p + "zeros6", np.zeros(6, np.int64)),
        _const(p + "pad_value", np.array(0.0, np.float32)),
        _const(p + "s0", np.array(0, np.int64)),
        _const(p + "s1", np.array(1, np.int64)),
        _const(p + "i1", np.array([1], np.int64)),
        _const(p + "half_f64", np.array(0.5, np.float64)),
        _const(p + "f0", np.array(0.0, np.float32)),
        _const(p + "f1", np.array(1.0, np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("Shape", [IMAGE_INPUT], [p + "shape"]),
        n("Slice", [p + "shape", p + "i2", p + "i4"], [p + "hw"]),
        n("Slice", [p + "shape", p + "i0", p + "i2"], [p + "bc"]),
        n("Cast", [p + "hw"], [p + "hw_f64"], to=TensorProto.DOUBLE),
        n("ReduceMin", [p + "hw_f64"], [p + "short"], keepdims=1),
        n("ReduceMax", [p + "hw_f64"], [p + "long"], keepdims=1),
        n("Div", [p + "min_size", p + "short"], [p + "scale_short"]),
        n("Div", [p + "max_size", p + "long"], [p + "scale_long"]),
        n("Min", [p + "scale_short", p + "scale_long"], [p + "scale"]),
        n("Mul", [p + "hw_f64", p + "scale"], [p + "new_hw_f64"]),
        n("Floor", [p + "new_hw_f64"], [p + "new_hw_floor"]),
        n("Cast", [p + "new_hw_floor"], [p + "new_hw"], to=TensorProto.INT64),
        n("Concat", [p + "bc", p + "new_hw"], [p + "sizes"], axis=0),
        n("Sub", [IMAGE_INPUT, p + "mean"], [p + "centred"]),
        n("Div", [p + "centred", p + "std"], [p + "normalised"]),
        *_bilinear_nodes(p, p + "normalised", p + "hw", p + "new_hw", p + "resized"),
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
    return nodes, inits


def with_preprocessing(model, min_size, max_size, mean, std):
    """``model`` (taking NETWORK_INPUTS first) rewritten to take IMAGE_INPUT instead, in place."""
    graph = model.graph
    inputs = [i.name for i in graph.input]
    if tuple(inputs[:3]) != NETWORK_INPUTS:
        raise ValueError(f"expected the network inputs {NETWORK_INPUTS} first, got {inputs}")
    nodes, inits = preprocess_nodes(min_size, max_size, mean, std)
    rest = list(graph.input)[3:]
    image = helper.make_tensor_value_info(
        IMAGE_INPUT, TensorProto.FLOAT, ["batch", 3, "height", "width"]
    )
    del graph.input[:]
    graph.input.extend([image] + rest)
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    graph.initializer.extend(inits)
    return model


def preprocess_model(min_size, max_size, mean, std, opset=18):
    """The pre-processing alone as a model (IMAGE_INPUT -> NETWORK_INPUTS), for tests."""
    nodes, inits = preprocess_nodes(min_size, max_size, mean, std)
    outputs = [
        helper.make_tensor_value_info(NETWORK_INPUTS[0], TensorProto.FLOAT, None),
        helper.make_tensor_value_info(NETWORK_INPUTS[1], TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info(NETWORK_INPUTS[2], TensorProto.FLOAT, [2]),
    ]
    image = helper.make_tensor_value_info(
        IMAGE_INPUT, TensorProto.FLOAT, ["batch", 3, "height", "width"]
    )
    graph = helper.make_graph(nodes, "preprocess", [image], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
