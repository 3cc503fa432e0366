// RoIAlign on CUDA: torchvision's semantics (roi_geometry.h), on NCHW or channels-last maps.
//
// Forward: one thread per output value, reading the map through its strides; on a
// channels-last map consecutive threads take consecutive channels, so their reads coalesce.
// fp16 and bf16 maps are accumulated in float. Backward: one thread per output gradient value,
// atomically adding into a float (or double) map gradient laid out like the input, converted
// to the map's dtype at the end. Output (K, C, PH, PW) contiguous, as torchvision's.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../roi_geometry.h"

namespace custom_ops {
namespace {

constexpr int kThreads = 256;

struct Strides {
  int64_t n, c, h, w;
};

// (k, c, ph, pw) of a flat thread index; channels fastest on channels-last maps.
__device__ __forceinline__ void unravel(
    int64_t index, int64_t channels, int pooled_h, int pooled_w, bool channels_inner,
    int64_t& k, int64_t& c, int& ph, int& pw) {
  if (channels_inner) {
    c = index % channels;
    int64_t t = index / channels;
    pw = static_cast<int>(t % pooled_w);
    t /= pooled_w;
    ph = static_cast<int>(t % pooled_h);
    k = t / pooled_h;
  } else {
    pw = static_cast<int>(index % pooled_w);
    int64_t t = index / pooled_w;
    ph = static_cast<int>(t % pooled_h);
    t /= pooled_h;
    c = t % channels;
    k = t / channels;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void roi_align_forward_kernel(
    int64_t total,
    const scalar_t* __restrict__ input,
    Strides in,
    const acc_t* __restrict__ rois,
    acc_t spatial_scale,
    int64_t channels,
    int64_t height,
    int64_t width,
    int pooled_h,
    int pooled_w,
    int64_t sampling_ratio,
    bool aligned,
    bool channels_inner,
    scalar_t* __restrict__ output) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t k, c;
    int ph, pw;
    unravel(index, channels, pooled_h, pooled_w, channels_inner, k, c, ph, pw);
    const RoIBox<acc_t> r =
        roi_box(rois + k * 5, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned);
    const scalar_t* plane = input + r.batch * in.n + c * in.c;
    const acc_t count = static_cast<acc_t>(max(r.grid_h * r.grid_w, 1));
    acc_t sum = 0;
    for (int iy = 0; iy < r.grid_h; iy++) {
      const acc_t y = sample_coordinate(r.start_h, r.bin_h, ph, iy, r.grid_h);
      for (int ix = 0; ix < r.grid_w; ix++) {
        const acc_t x = sample_coordinate(r.start_w, r.bin_w, pw, ix, r.grid_w);
        int64_t pos[4];
        acc_t w[4];
        bilinear_taps(y, x, height, width, pos, w);
        acc_t value = 0;
        for (int t = 0; t < 4; t++) {
          const int64_t py = pos[t] / width, px = pos[t] % width;
          value += w[t] * static_cast<acc_t>(plane[py * in.h + px * in.w]);
        }
        sum += value;
      }
    }
    output[((k * channels + c) * pooled_h + ph) * pooled_w + pw] =
        static_cast<scalar_t>(sum / count);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void roi_align_backward_kernel(
    int64_t total,
    const scalar_t* __restrict__ grad,
    Strides g,
    const acc_t* __restrict__ rois,
    acc_t spatial_scale,
    int64_t channels,
    int64_t height,
    int64_t width,
    int pooled_h,
    int pooled_w,
    int64_t sampling_ratio,
    bool aligned,
    bool channels_inner,
    acc_t* __restrict__ grad_map,
    Strides out) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t k, c;
    int ph, pw;
    unravel(index, channels, pooled_h, pooled_w, channels_inner, k, c, ph, pw);
    const RoIBox<acc_t> r =
        roi_box(rois + k * 5, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned);
    if (r.grid_h <= 0 || r.grid_w <= 0) continue;
    const acc_t count = static_cast<acc_t>(r.grid_h * r.grid_w);
    const acc_t gv = static_cast<acc_t>(grad[k * g.n + c * g.c + ph * g.h + pw * g.w]);
    acc_t* plane = grad_map + r.batch * out.n + c * out.c;
    for (int iy = 0; iy < r.grid_h; iy++) {
      const acc_t y = sample_coordinate(r.start_h, r.bin_h, ph, iy, r.grid_h);
      for (int ix = 0; ix < r.grid_w; ix++) {
        const acc_t x = sample_coordinate(r.start_w, r.bin_w, pw, ix, r.grid_w);
        int64_t pos[4];
        acc_t w[4];
        if (!bilinear_taps(y, x, height, width, pos, w)) continue;
        for (int t = 0; t < 4; t++) {
          const int64_t py = pos[t] / width, px = pos[t] % width;
          atomicAdd(plane + py * out.h + px * out.w, gv * w[t] / count);
        }
      }
    }
  }
}

Strides strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

int blocks_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535));
}

at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor roi_align_forward_cuda(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    bool aligned) {
  TORCH_CHECK(input.is_cuda() && rois.is_cuda(), "custom_ops::roi_align: CUDA tensors expected");
  TORCH_CHECK(input.device() == rois.device(), "input and rois must be on the same device");
  TORCH_CHECK(input.dim() == 4, "input must be (N, C, H, W), got ", input.sizes());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "rois must be (K, 5), got ", rois.sizes());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, "output size must be positive");
  c10::cuda::CUDAGuard guard(input.device());
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  auto output = at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  if (output.numel() == 0 || input.size(2) == 0 || input.size(3) == 0) {
    return output;
  }
  const bool channels_last = input.is_contiguous(at::MemoryFormat::ChannelsLast) &&
      !input.is_contiguous();
  const auto boxes = rois.to(acc_type(input.scalar_type())).contiguous();
  const int64_t total = output.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, input.scalar_type(), "custom_ops::roi_align", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        roi_align_forward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
            total, input.const_data_ptr<scalar_t>(), strides_of(input),
            boxes.const_data_ptr<acc_t>(), static_cast<acc_t>(spatial_scale), channels,
            input.size(2), input.size(3), static_cast<int>(pooled_height),
            static_cast<int>(pooled_width), sampling_ratio, aligned, channels_last,
            output.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

at::Tensor roi_align_backward_cuda(
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
  TORCH_CHECK(grad.is_cuda() && rois.is_cuda(),
              "custom_ops::_roi_align_backward: CUDA tensors expected");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "grad has shape ", grad.sizes(), ", expected (", rois.size(0), ", ", channels,
              ", ", pooled_height, ", ", pooled_width, ")");
  c10::cuda::CUDAGuard guard(grad.device());
  const auto format =
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto acc = acc_type(grad.scalar_type());
  auto grad_map =
      at::empty({batch_size, channels, height, width}, grad.options().dtype(acc), format).zero_();
  const int64_t total = grad.numel();
  if (total > 0 && height > 0 && width > 0) {
    const auto boxes = rois.to(acc).contiguous();
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, grad.scalar_type(), "custom_ops::_roi_align_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          roi_align_backward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
              total, grad.const_data_ptr<scalar_t>(), strides_of(grad),
              boxes.const_data_ptr<acc_t>(), static_cast<acc_t>(spatial_scale), channels,
              height, width, static_cast<int>(pooled_height), static_cast<int>(pooled_width),
              sampling_ratio, aligned, channels_last, grad_map.mutable_data_ptr<acc_t>(),
              strides_of(grad_map));
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return grad_map.scalar_type() == grad.scalar_type() ? grad_map : grad_map.to(grad.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(custom_ops, CUDA, m) {
  m.impl("roi_align", &roi_align_forward_cuda);
  m.impl("_roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace custom_ops
