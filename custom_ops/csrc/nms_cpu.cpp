// Non-maximum suppression on the CPU: torchvision's `nms`, with an optional cap on the kept
// boxes that stops the greedy pass early (what `keep[:n]` would keep, without the rest).
//
// Same results as torchvision's kernel, ties included: the boxes are ordered as torchvision
// orders them (a stable sort by decreasing score: ties in index order), the overlap is the same
// float expression, compared with the threshold in double as torchvision does. The candidates
// still alive are kept compacted in score order, so each kept box meets exactly the boxes
// torchvision's loop would test it against; that test is branch-free and vectorised.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_dispatch.h"

namespace custom_ops {
namespace {

// Overlap of box i with candidates [0, n) of the SoA arrays, as torchvision computes it:
// keep[r] = 1 when candidate r survives (IoU not above the threshold). No branch: vectorised.
template <typename scalar_t>
CUSTOM_OPS_INLINE void survivors(
    const scalar_t* __restrict__ x1, const scalar_t* __restrict__ y1,
    const scalar_t* __restrict__ x2, const scalar_t* __restrict__ y2,
    const scalar_t* __restrict__ area, int64_t n, scalar_t ix1, scalar_t iy1, scalar_t ix2,
    scalar_t iy2, scalar_t iarea, double iou_threshold, uint8_t* __restrict__ keep) {
  for (int64_t r = 0; r < n; r++) {
    // std::max / std::min written out, operands in torchvision's order
    const scalar_t xx1 = ix1 < x1[r] ? x1[r] : ix1;
    const scalar_t yy1 = iy1 < y1[r] ? y1[r] : iy1;
    const scalar_t xx2 = x2[r] < ix2 ? x2[r] : ix2;
    const scalar_t yy2 = y2[r] < iy2 ? y2[r] : iy2;
    const scalar_t dw = xx2 - xx1, dh = yy2 - yy1;
    const scalar_t w = static_cast<scalar_t>(0) < dw ? dw : static_cast<scalar_t>(0);
    const scalar_t h = static_cast<scalar_t>(0) < dh ? dh : static_cast<scalar_t>(0);
    const scalar_t inter = w * h;
    const scalar_t ovr = inter / (iarea + area[r] - inter);
    keep[r] = !(static_cast<double>(ovr) > iou_threshold);
  }
}

#define CUSTOM_OPS_SURVIVORS(scalar_t)                                                         \
  CUSTOM_OPS_CLONES void survivors_of(                                                         \
      const scalar_t* x1, const scalar_t* y1, const scalar_t* x2, const scalar_t* y2,          \
      const scalar_t* area, int64_t n, scalar_t ix1, scalar_t iy1, scalar_t ix2, scalar_t iy2, \
      scalar_t iarea, double iou_threshold, uint8_t* keep) {                                   \
    survivors<scalar_t>(x1, y1, x2, y2, area, n, ix1, iy1, ix2, iy2, iarea, iou_threshold,    \
                        keep);                                                                 \
  }
CUSTOM_OPS_SURVIVORS(float)
CUSTOM_OPS_SURVIVORS(double)

// Greedy NMS over boxes sorted by decreasing score: the candidates not yet suppressed are
// kept compacted (structure of arrays, in score order), so each kept box is compared with
// exactly the boxes torchvision's loop would compare it with, and no suppressed one is
// visited again.
template <typename scalar_t>
void nms_impl(
    const at::Tensor& boxes,  // (N, 4), sorted by decreasing score
    double iou_threshold,
    int64_t max_keep,
    std::vector<int64_t>& kept) {
  const int64_t n = boxes.size(0);
  std::vector<scalar_t> x1(n), y1(n), x2(n), y2(n), area(n);
  std::vector<int64_t> position(n);
  std::vector<uint8_t> keep(n);
  const auto b = boxes.accessor<scalar_t, 2>();
  for (int64_t i = 0; i < n; i++) {
    x1[i] = b[i][0];
    y1[i] = b[i][1];
    x2[i] = b[i][2];
    y2[i] = b[i][3];
    area[i] = (x2[i] - x1[i]) * (y2[i] - y1[i]);
    position[i] = i;
  }
  int64_t alive = n;
  for (int64_t head = 0; head < alive; head++) {
    kept.push_back(position[head]);
    if (max_keep >= 0 && static_cast<int64_t>(kept.size()) >= max_keep) break;
    const int64_t first = head + 1, rest = alive - first;
    survivors_of(x1.data() + first, y1.data() + first, x2.data() + first, y2.data() + first,
                 area.data() + first, rest, x1[head], y1[head], x2[head], y2[head], area[head],
                 iou_threshold, keep.data());
    int64_t w = first;
    for (int64_t r = 0; r < rest; r++) {
      const int64_t from = first + r;
      x1[w] = x1[from];
      y1[w] = y1[from];
      x2[w] = x2[from];
      y2[w] = y2[from];
      area[w] = area[from];
      position[w] = position[from];
      w += keep[r];
    }
    alive = w;
  }
}

at::Tensor nms_cpu(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    double iou_threshold,
    int64_t max_keep) {
  TORCH_CHECK(boxes.device().is_cpu() && scores.device().is_cpu(),
              "custom_ops::nms: CPU tensors expected");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "boxes must be (N, 4), got ",
              boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "scores must be (N,) with N = ", boxes.size(0), ", got ", scores.sizes());
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(),
              "boxes and scores must have the same dtype, got ", boxes.scalar_type(), " and ",
              scores.scalar_type());
  if (boxes.size(0) == 0 || max_keep == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const auto order = std::get<1>(scores.sort(/*stable=*/true, 0, /*descending=*/true));
  const auto sorted = boxes.index_select(0, order);
  std::vector<int64_t> kept;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "custom_ops::nms", [&] {
    nms_impl<scalar_t>(sorted, iou_threshold, max_keep, kept);
  });
  const auto positions =
      at::from_blob(kept.data(), {static_cast<int64_t>(kept.size())}, at::kLong);
  return order.index_select(0, positions);
}

}  // namespace

TORCH_LIBRARY_IMPL(custom_ops, CPU, m) {
  m.impl("nms", &nms_cpu);
}

}  // namespace custom_ops
