// Where RoIAlign samples a feature map: shared by the CPU and CUDA kernels.
//
// The arithmetic is torchvision's (roi_align_kernel.cpp / .cu), operation for operation and in
// the same order, so that results match to the bit where the compiler does not fuse multiply
// and add (the CPU build uses -ffp-contract=off): box corners scaled and shifted by half a
// pixel when `aligned`, boxes narrower than a pixel widened to one when not, `sampling_ratio`
// samples per bin side (or ceil(bin size) when it is <= 0), samples beyond [-1, size] weighing
// nothing, the others clamped into the map.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define CUSTOM_OPS_HD __host__ __device__ __forceinline__
#else
#define CUSTOM_OPS_HD inline
#endif

namespace custom_ops {

// One RoI in map coordinates. `acc_t` is the arithmetic type: float for float, bf16 and fp16
// maps, double for double maps.
template <typename acc_t>
struct RoIBox {
  int64_t batch;
  acc_t start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;  // samples per bin along each axis
};

template <typename acc_t>
CUSTOM_OPS_HD RoIBox<acc_t> roi_box(
    const acc_t* roi,  // (batch index, x1, y1, x2, y2)
    acc_t spatial_scale,
    int pooled_h,
    int pooled_w,
    int64_t sampling_ratio,
    bool aligned) {
  RoIBox<acc_t> r;
  r.batch = static_cast<int64_t>(roi[0]);
  const acc_t offset = aligned ? (acc_t)0.5 : (acc_t)0.0;
  r.start_w = roi[1] * spatial_scale - offset;
  r.start_h = roi[2] * spatial_scale - offset;
  const acc_t end_w = roi[3] * spatial_scale - offset;
  const acc_t end_h = roi[4] * spatial_scale - offset;
  acc_t width = end_w - r.start_w;
  acc_t height = end_h - r.start_h;
  if (!aligned) {  // malformed boxes become 1x1
    width = width < (acc_t)1. ? (acc_t)1. : width;  // std::max's order: NaN stays NaN
    height = height < (acc_t)1. ? (acc_t)1. : height;
  }
  r.bin_h = height / static_cast<acc_t>(pooled_h);
  r.bin_w = width / static_cast<acc_t>(pooled_w);
  r.grid_h = sampling_ratio > 0 ? static_cast<int>(sampling_ratio)
                                : static_cast<int>(ceil(height / pooled_h));
  r.grid_w = sampling_ratio > 0 ? static_cast<int>(sampling_ratio)
                                : static_cast<int>(ceil(width / pooled_w));
  return r;
}

// Coordinate of sample `i` of bin `p` along one axis.
template <typename acc_t>
CUSTOM_OPS_HD acc_t sample_coordinate(acc_t start, acc_t bin, int p, int i, int grid) {
  return start + p * bin + static_cast<acc_t>(i + .5f) * bin / static_cast<acc_t>(grid);
}

// Bilinear taps of one sample: pixel indices (y * width + x) and weights, in torchvision's
// order (top-left, top-right, bottom-left, bottom-right). False (weights 0, indices 0) for a
// sample outside [-1, height] x [-1, width]; the forward pass still adds its zero terms, the
// backward pass skips it, as torchvision's kernels do.
template <typename acc_t>
CUSTOM_OPS_HD bool bilinear_taps(
    acc_t y, acc_t x, int64_t height, int64_t width, int64_t* pos, acc_t* w) {
  if (!(y >= -1.0 && y <= height && x >= -1.0 && x <= width)) {
    pos[0] = pos[1] = pos[2] = pos[3] = 0;
    w[0] = w[1] = w[2] = w[3] = 0;
    return false;
  }
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int64_t y_low = static_cast<int>(y);
  int64_t x_low = static_cast<int>(x);
  int64_t y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = (acc_t)y_low;
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = (acc_t)x_low;
  } else {
    x_high = x_low + 1;
  }
  const acc_t ly = y - y_low;
  const acc_t lx = x - x_low;
  const acc_t hy = 1. - ly, hx = 1. - lx;
  w[0] = hy * hx;
  w[1] = hy * lx;
  w[2] = ly * hx;
  w[3] = ly * lx;
  pos[0] = y_low * width + x_low;
  pos[1] = y_low * width + x_high;
  pos[2] = y_high * width + x_low;
  pos[3] = y_high * width + x_high;
  return true;
}

}  // namespace custom_ops
