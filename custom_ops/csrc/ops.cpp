// The custom_ops library: operator schemas, the device-independent TopK + NMS, and the Python
// module whose import registers them (`import custom_ops._C`). Kernels live beside this file
// (CPU) and in cuda/ (a separate extension, custom_ops._C_cuda); the fake (meta) kernels and
// the autograd formula of roi_align are registered from Python (custom_ops/_ops.py).

#include <Python.h>

#include <ATen/ATen.h>
#include <torch/library.h>

namespace custom_ops {
namespace {

// The `k` best candidates by score (torch.topk, as torchvision's RPN selects them), then NMS
// over them, at most `max_keep` kept: indices into the candidates, by decreasing score. Any
// number of candidates and any k: nothing here has TensorRT's TopK (3840) or NMS (5000) limits.
at::Tensor topk_nms(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    int64_t k,
    double iou_threshold,
    int64_t max_keep) {
  TORCH_CHECK(scores.dim() == 1, "scores must be (N,), got ", scores.sizes());
  const int64_t n = scores.size(0);
  const int64_t top = k < 0 ? n : std::min(k, n);
  const auto index = std::get<1>(scores.topk(top));
  static auto nms = c10::Dispatcher::singleton()
                        .findSchemaOrThrow("custom_ops::nms", "")
                        .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t)>();
  const auto kept = nms.call(boxes.index_select(0, index), scores.index_select(0, index),
                             iou_threshold, max_keep);
  return index.index_select(0, kept);
}

}  // namespace

TORCH_LIBRARY(custom_ops, m) {
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int batch_size, int channels, int height, int width, "
      "int sampling_ratio, bool aligned, bool channels_last) -> Tensor");
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold, int max_keep=-1) -> Tensor");
  m.def(
      "topk_nms(Tensor boxes, Tensor scores, int k, float iou_threshold, int max_keep=-1) "
      "-> Tensor");
}

TORCH_LIBRARY_IMPL(custom_ops, CompositeImplicitAutograd, m) {
  m.impl("topk_nms", &topk_nms);
}

}  // namespace custom_ops

static struct PyModuleDef custom_ops_module = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "custom_ops' CPU kernels: importing registers the torch.ops.custom_ops operators.",
    -1,
    nullptr,
};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&custom_ops_module);
}
