// RoIAlign on the CPU: torchvision's values, computed over channels-last maps.
//
// torchvision's CPU kernel walks an NCHW map one channel plane at a time on one thread. Here
// the map is read channels-last (NHWC; an NCHW map is converted once), where each bilinear
// tap of a sample is a contiguous vector of channels: the inner loops run over a block of
// channels, which the compiler vectorises at -O3 without any -march flag.
//
// Forward: threads take RoIs. Each output value is the same sum, in the same order, as
// torchvision's (the build uses -ffp-contract=off), so the values are equal to the bit.
// Backward: threads take blocks of channels and every thread walks all RoIs in order, so each
// element of the map's gradient receives the same additions in the same order as in
// torchvision's serial kernel: equal to the bit too, and deterministic.
//
// Map dtypes: float, double, bfloat16 and half (accumulated in float). Boxes: (K, 5) rows of
// (batch index, x1, y1, x2, y2) in float, double or the map's dtype; low-precision boxes are
// widened to float.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_dispatch.h"
#include "roi_geometry.h"

namespace custom_ops {
namespace {

// Channels per inner loop (a compile-time trip count, unrolled and vectorised). Measured on
// the benchmark's res4 map (1024 channels, 300 RoIs at 14x14): 16 is fastest forward, where
// each block's accumulators stay in registers; 64 backward, where the per-tap overhead is
// spread over more channels (0.43 -> 0.12 s on one thread).
constexpr int kForwardBlock = 16;
constexpr int kBackwardBlock = 64;

template <typename acc_t>
struct Sample {
  int64_t offset[4];  // element offsets of the four taps in an NHWC image (pixel * channels)
  acc_t w[4];
  bool valid;
};

// The samples of one RoI, bin by bin (row-major), each bin's grid row-major, as torchvision's
// pre-calculation orders them.
template <typename acc_t>
void roi_samples(
    const RoIBox<acc_t>& r,
    int pooled_h,
    int pooled_w,
    int64_t height,
    int64_t width,
    int64_t channels,
    std::vector<Sample<acc_t>>& out) {
  const int64_t grid = r.grid_h > 0 && r.grid_w > 0 ? static_cast<int64_t>(r.grid_h) * r.grid_w : 0;
  out.resize(static_cast<size_t>(pooled_h) * pooled_w * grid);
  size_t n = 0;
  for (int ph = 0; ph < pooled_h; ph++) {
    for (int pw = 0; pw < pooled_w; pw++) {
      for (int iy = 0; iy < r.grid_h; iy++) {
        const acc_t y = sample_coordinate(r.start_h, r.bin_h, ph, iy, r.grid_h);
        for (int ix = 0; ix < r.grid_w; ix++) {
          const acc_t x = sample_coordinate(r.start_w, r.bin_w, pw, ix, r.grid_w);
          Sample<acc_t>& s = out[n++];
          s.valid = bilinear_taps(y, x, height, width, s.offset, s.w);
          for (int t = 0; t < 4; t++) s.offset[t] *= channels;
        }
      }
    }
  }
}

inline bool is_power_of_two(int64_t v) {
  return v > 0 && (v & (v - 1)) == 0;
}

// Output bins of one RoI for channels [c0, c0 + CB): `in` points at the image's NHWC map
// shifted by c0, `out` at the RoI's (C, bins) output block shifted by c0 rows. `CB` is a
// compile-time block (vectorised) or 0 for a tail of `cb` channels. Dividing by a power of two
// equals multiplying by its inverse, bit for bit.
template <int CB, bool kPow2, typename scalar_t, typename acc_t>
CUSTOM_OPS_INLINE void forward_block(
    const scalar_t* __restrict__ in,
    const Sample<acc_t>* __restrict__ samples,
    int bins,
    int per_bin,
    acc_t count,
    int cb,
    scalar_t* __restrict__ out) {
  constexpr int kMax = CB > 0 ? CB : kForwardBlock;
  const int n = CB > 0 ? CB : cb;
  const acc_t inv = acc_t(1) / count;
  const Sample<acc_t>* s = samples;
  for (int bin = 0; bin < bins; bin++) {
    acc_t acc[kMax];
    for (int c = 0; c < n; c++) acc[c] = 0;
    for (int k = 0; k < per_bin; k++, s++) {
      const scalar_t* p1 = in + s->offset[0];
      const scalar_t* p2 = in + s->offset[1];
      const scalar_t* p3 = in + s->offset[2];
      const scalar_t* p4 = in + s->offset[3];
      const acc_t w1 = s->w[0], w2 = s->w[1], w3 = s->w[2], w4 = s->w[3];
      for (int c = 0; c < n; c++) {
        acc[c] += w1 * static_cast<acc_t>(p1[c]) + w2 * static_cast<acc_t>(p2[c]) +
            w3 * static_cast<acc_t>(p3[c]) + w4 * static_cast<acc_t>(p4[c]);
      }
    }
    for (int c = 0; c < n; c++) {
      out[static_cast<int64_t>(c) * bins + bin] =
          static_cast<scalar_t>(kPow2 ? acc[c] * inv : acc[c] / count);
    }
  }
}

template <bool kPow2, typename scalar_t, typename acc_t>
CUSTOM_OPS_INLINE void forward_roi(
    const scalar_t* in,
    const Sample<acc_t>* samples,
    int bins,
    int per_bin,
    acc_t count,
    int64_t channels,
    scalar_t* out) {
  int64_t c0 = 0;
  for (; c0 + kForwardBlock <= channels; c0 += kForwardBlock) {
    forward_block<kForwardBlock, kPow2>(
        in + c0, samples, bins, per_bin, count, kForwardBlock, out + c0 * bins);
  }
  if (c0 < channels) {
    forward_block<0, kPow2>(
        in + c0, samples, bins, per_bin, count, static_cast<int>(channels - c0),
        out + c0 * bins);
  }
}

template <typename scalar_t, typename acc_t>
CUSTOM_OPS_INLINE void forward_kernel(const scalar_t* in, const Sample<acc_t>* samples,
                                      int bins, int per_bin, acc_t count, bool pow2,
                                      int64_t channels, scalar_t* out) {
  if (pow2) {
    forward_roi<true>(in, samples, bins, per_bin, count, channels, out);
  } else {
    forward_roi<false>(in, samples, bins, per_bin, count, channels, out);
  }
}

#define CUSTOM_OPS_FORWARD(scalar_t, acc_t)                                                   \
  CUSTOM_OPS_CLONES void forward_kernel(const scalar_t* in, const Sample<acc_t>* samples,     \
                                        int bins, int per_bin, acc_t count, bool pow2,        \
                                        int64_t channels, scalar_t* out) {                    \
    forward_kernel<scalar_t, acc_t>(in, samples, bins, per_bin, count, pow2, channels, out); \
  }
CUSTOM_OPS_FORWARD(float, float)
CUSTOM_OPS_FORWARD(c10::BFloat16, float)

template <typename scalar_t>
void forward_impl(
    const at::Tensor& map,  // NHWC
    const at::Tensor& rois,  // (K, 5), acc_t
    double spatial_scale,
    int pooled_h,
    int pooled_w,
    int64_t sampling_ratio,
    bool aligned,
    at::Tensor& output) {  // (K, C, PH, PW) contiguous
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_rois = rois.size(0);
  const int64_t channels = map.size(1), height = map.size(2), width = map.size(3);
  const int64_t image_stride = height * width * channels;
  const int bins = pooled_h * pooled_w;
  const scalar_t* in = map.const_data_ptr<scalar_t>();
  const acc_t* roi_data = rois.const_data_ptr<acc_t>();
  scalar_t* out = output.mutable_data_ptr<scalar_t>();
  const acc_t scale = static_cast<acc_t>(spatial_scale);

  at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
    std::vector<Sample<acc_t>> samples;
    for (int64_t k = begin; k < end; k++) {
      const RoIBox<acc_t> r =
          roi_box(roi_data + k * 5, scale, pooled_h, pooled_w, sampling_ratio, aligned);
      roi_samples(r, pooled_h, pooled_w, height, width, channels, samples);
      // torchvision divides by max(grid_h * grid_w, 1); an empty grid gives zeros.
      const int count_i = std::max(r.grid_h * r.grid_w, 1);
      const acc_t count = static_cast<acc_t>(count_i);
      const int per_bin = r.grid_h > 0 && r.grid_w > 0 ? r.grid_h * r.grid_w : 0;
      const scalar_t* image = in + r.batch * image_stride;
      scalar_t* dst = out + k * channels * bins;
      forward_kernel(image, samples.data(), bins, per_bin, count, is_power_of_two(count_i),
                     channels, dst);
    }
  });
}

// The map gradient of channels [c0, c0 + CB) from one RoI: `grad` points at the RoI's output
// gradient shifted by c0 channels (strides in elements), `gin` at the image's NHWC float
// gradient shifted by c0.
template <int CB, bool kPow2, typename scalar_t, typename acc_t>
CUSTOM_OPS_INLINE void backward_block(
    const scalar_t* __restrict__ grad,
    int64_t stride_c,
    int64_t stride_h,
    int64_t stride_w,
    const Sample<acc_t>* __restrict__ samples,
    int pooled_h,
    int pooled_w,
    int per_bin,
    acc_t count,
    int cb,
    acc_t* __restrict__ gin) {
  constexpr int kMax = CB > 0 ? CB : kBackwardBlock;
  const int n = CB > 0 ? CB : cb;
  const acc_t inv = acc_t(1) / count;
  const Sample<acc_t>* s = samples;
  for (int ph = 0; ph < pooled_h; ph++) {
    for (int pw = 0; pw < pooled_w; pw++) {
      acc_t g[kMax];
      const scalar_t* src = grad + ph * stride_h + pw * stride_w;
      for (int c = 0; c < n; c++) g[c] = static_cast<acc_t>(src[c * stride_c]);
      for (int k = 0; k < per_bin; k++, s++) {
        if (!s->valid) continue;
        for (int t = 0; t < 4; t++) {
          acc_t* dst = gin + s->offset[t];
          const acc_t w = s->w[t];
          for (int c = 0; c < n; c++) {
            dst[c] += kPow2 ? g[c] * w * inv : g[c] * w / count;
          }
        }
      }
    }
  }
}

// The map gradient from one RoI for channel blocks [begin, end).
template <typename scalar_t, typename acc_t>
CUSTOM_OPS_INLINE void backward_kernel(const scalar_t* grad, int64_t sc, int64_t sh,
                                       int64_t sw, const Sample<acc_t>* samples, int pooled_h,
                                       int pooled_w, int per_bin, acc_t count, bool pow2,
                                       int64_t channels, int64_t begin, int64_t end,
                                       acc_t* image) {
  for (int64_t b = begin; b < end; b++) {
    const int64_t c0 = b * kBackwardBlock;
    const int cb = static_cast<int>(std::min<int64_t>(kBackwardBlock, channels - c0));
    const scalar_t* src = grad + c0 * sc;
    if (cb == kBackwardBlock) {
      if (pow2) {
        backward_block<kBackwardBlock, true>(src, sc, sh, sw, samples, pooled_h, pooled_w, per_bin,
                                     count, cb, image + c0);
      } else {
        backward_block<kBackwardBlock, false>(src, sc, sh, sw, samples, pooled_h, pooled_w, per_bin,
                                      count, cb, image + c0);
      }
    } else if (pow2) {
      backward_block<0, true>(src, sc, sh, sw, samples, pooled_h, pooled_w, per_bin, count, cb,
                              image + c0);
    } else {
      backward_block<0, false>(src, sc, sh, sw, samples, pooled_h, pooled_w, per_bin, count,
                               cb, image + c0);
    }
  }
}

#define CUSTOM_OPS_BACKWARD(scalar_t, acc_t)                                                  \
  CUSTOM_OPS_CLONES void backward_kernel(                                                     \
      const scalar_t* grad, int64_t sc, int64_t sh, int64_t sw, const Sample<acc_t>* samples, \
      int pooled_h, int pooled_w, int per_bin, acc_t count, bool pow2, int64_t channels,      \
      int64_t begin, int64_t end, acc_t* image) {                                             \
    backward_kernel<scalar_t, acc_t>(grad, sc, sh, sw, samples, pooled_h, pooled_w, per_bin,  \
                                     count, pow2, channels, begin, end, image);              \
  }
CUSTOM_OPS_BACKWARD(float, float)
CUSTOM_OPS_BACKWARD(c10::BFloat16, float)

template <typename scalar_t>
void backward_impl(
    const at::Tensor& grad,  // (K, C, PH, PW), any strides
    const at::Tensor& rois,  // (K, 5), acc_t
    double spatial_scale,
    int pooled_h,
    int pooled_w,
    int64_t sampling_ratio,
    bool aligned,
    at::Tensor& grad_map) {  // (N, C, H, W) in acc_t, channels-last, zeroed
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_rois = rois.size(0);
  const int64_t channels = grad_map.size(1), height = grad_map.size(2), width = grad_map.size(3);
  const int64_t image_stride = height * width * channels;
  const scalar_t* g = grad.const_data_ptr<scalar_t>();
  const int64_t sk = grad.stride(0), sc = grad.stride(1), sh = grad.stride(2), sw = grad.stride(3);
  const acc_t* roi_data = rois.const_data_ptr<acc_t>();
  acc_t* gin = grad_map.mutable_data_ptr<acc_t>();
  const acc_t scale = static_cast<acc_t>(spatial_scale);
  const int64_t blocks = (channels + kBackwardBlock - 1) / kBackwardBlock;

  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<Sample<acc_t>> samples;
    for (int64_t k = 0; k < num_rois; k++) {
      const RoIBox<acc_t> r =
          roi_box(roi_data + k * 5, scale, pooled_h, pooled_w, sampling_ratio, aligned);
      if (r.grid_h <= 0 || r.grid_w <= 0) continue;  // no sample, nothing added
      const int64_t grid = static_cast<int64_t>(r.grid_h) * r.grid_w;
      roi_samples(r, pooled_h, pooled_w, height, width, channels, samples);
      // torchvision's backward divides by grid_h * grid_w (no clamp at 1: an empty grid adds
      // nothing).
      const acc_t count = static_cast<acc_t>(r.grid_h * r.grid_w);
      const bool pow2 = is_power_of_two(grid);
      acc_t* image = gin + r.batch * image_stride;
      backward_kernel(g + k * sk, sc, sh, sw, samples.data(), pooled_h, pooled_w,
                      static_cast<int>(grid), count, pow2, channels, begin, end, image);
    }
  });
}

at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

void check_rois(const at::Tensor& rois, int64_t batch_size) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "rois must have shape (K, 5), got ",
              rois.sizes());
  TORCH_CHECK(rois.is_floating_point(), "rois must be floating point, got ", rois.scalar_type());
  if (rois.size(0) > 0) {
    const auto index = rois.select(1, 0);
    const double low = index.min().item<double>(), high = index.max().item<double>();
    TORCH_CHECK(low >= 0 && high < batch_size, "rois' batch indices must lie in [0, ",
                batch_size, "), got [", low, ", ", high, "]");
  }
}

at::Tensor roi_align_forward_cpu(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    bool aligned) {
  TORCH_CHECK(input.device().is_cpu() && rois.device().is_cpu(),
              "custom_ops::roi_align: CPU tensors expected");
  TORCH_CHECK(input.dim() == 4, "input must be (N, C, H, W), got ", input.sizes());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, "output size must be positive");
  check_rois(rois, input.size(0));
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  if (num_rois == 0 || channels == 0 || input.size(2) == 0 || input.size(3) == 0) {
    return at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  }
  auto output = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options());
  const auto map = input.contiguous(at::MemoryFormat::ChannelsLast);
  const auto boxes = rois.to(acc_type(input.scalar_type())).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, input.scalar_type(), "custom_ops::roi_align", [&] {
        forward_impl<scalar_t>(map, boxes, spatial_scale, static_cast<int>(pooled_height),
                               static_cast<int>(pooled_width), sampling_ratio, aligned, output);
      });
  return output;
}

at::Tensor roi_align_backward_cpu(
    const at::Tensor& grad,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t sampling_ratio,
    bool aligned,
    bool channels_last) {
  TORCH_CHECK(grad.device().is_cpu() && rois.device().is_cpu(),
              "custom_ops::_roi_align_backward: CPU tensors expected");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "grad has shape ", grad.sizes(), ", expected (", rois.size(0), ", ", channels,
              ", ", pooled_height, ", ", pooled_width, ")");
  check_rois(rois, batch_size);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto acc = acc_type(grad.scalar_type());
  // Accumulate in the arithmetic type, channels-last; write straight into the result when
  // that is what the caller wants.
  const bool direct = channels_last && acc == grad.scalar_type();
  auto grad_map = at::empty({batch_size, channels, height, width}, grad.options().dtype(acc),
                            at::MemoryFormat::ChannelsLast)
                      .zero_();
  if (grad.numel() > 0 && height > 0 && width > 0) {
    const auto boxes = rois.to(acc).contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, grad.scalar_type(), "custom_ops::_roi_align_backward", [&] {
          backward_impl<scalar_t>(grad, boxes, spatial_scale, static_cast<int>(pooled_height),
                                  static_cast<int>(pooled_width), sampling_ratio, aligned,
                                  grad_map);
        });
  }
  if (direct) {
    return grad_map;
  }
  auto result = at::empty({batch_size, channels, height, width}, grad.options(), format);
  result.copy_(grad_map);
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(custom_ops, CPU, m) {
  m.impl("roi_align", &roi_align_forward_cpu);
  m.impl("_roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace custom_ops
