// Non-maximum suppression on CUDA: torchvision's `nms` results, with the greedy pass on the GPU.
//
// Boxes are ordered as torchvision orders them (a stable sort by decreasing score: ties in
// index order), and the overlap test is torchvision's CUDA expression (areas and intersection
// in the accumulation type, compared with the threshold as a float). Pass 1: a bit mask of
// which later boxes each box overlaps, 64 columns per word, one thread per row. Pass 2: one
// block walks the boxes in score order, keeping those no kept box has suppressed and OR-ing
// each kept box's row into the suppressed set, until `max_keep` are kept. Only the count comes
// back to the host.

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

namespace custom_ops {
namespace {

constexpr int kWord = 64;  // boxes per mask word
constexpr int kGatherThreads = 256;

template <typename T>
__device__ __forceinline__ bool overlaps(const T* a, const T* b, float threshold) {
  using acc_t = at::acc_type<T, /*is_cuda=*/true>;
  const T left = max(a[0], b[0]), right = min(a[2], b[2]);
  const T top = max(a[1], b[1]), bottom = min(a[3], b[3]);
  const T w = max(right - left, (T)0), h = max(bottom - top, (T)0);
  const acc_t inter = (acc_t)w * h;
  const acc_t area_a = ((acc_t)a[2] - a[0]) * (a[3] - a[1]);
  const acc_t area_b = ((acc_t)b[2] - b[0]) * (b[3] - b[1]);
  return inter / (area_a + area_b - inter) > threshold;
}

// mask[i * words + j]: bit b set when box i overlaps box 64 j + b (> i) above the threshold.
template <typename T>
__global__ void overlap_mask_kernel(
    int64_t n, int64_t words, float threshold, const T* __restrict__ boxes, uint64_t* mask) {
  const int64_t row_block = blockIdx.y, col_block = blockIdx.x;
  if (row_block > col_block) return;
  __shared__ T tile[kWord * 4];
  const int64_t col0 = col_block * kWord;
  const int64_t cols = min(static_cast<int64_t>(kWord), n - col0);
  if (threadIdx.x < cols) {
    for (int d = 0; d < 4; d++) tile[threadIdx.x * 4 + d] = boxes[(col0 + threadIdx.x) * 4 + d];
  }
  __syncthreads();
  const int64_t row = row_block * kWord + threadIdx.x;
  if (row >= n) return;
  const T* box = boxes + row * 4;
  uint64_t bits = 0;
  const int start = row_block == col_block ? threadIdx.x + 1 : 0;
  for (int b = start; b < cols; b++) {
    if (overlaps(box, tile + b * 4, threshold)) bits |= 1ULL << b;
  }
  mask[row * words + col_block] = bits;
}

// The greedy pass, in one block: keep[i] = order[position] for kept positions, in order.
__global__ void greedy_kernel(
    int64_t n,
    int64_t words,
    int64_t max_keep,
    const uint64_t* __restrict__ mask,
    const int64_t* __restrict__ order,
    int64_t* __restrict__ keep,
    int64_t* __restrict__ count) {
  extern __shared__ uint64_t removed[];
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) removed[w] = 0;
  __syncthreads();
  int64_t kept = 0;
  for (int64_t i = 0; i < n && (max_keep < 0 || kept < max_keep); i++) {
    const int64_t word = i / kWord;
    const bool suppressed = (removed[word] >> (i % kWord)) & 1ULL;
    __syncthreads();  // every thread has read removed[word] before anyone writes it
    if (suppressed) continue;
    if (threadIdx.x == 0) keep[kept] = order[i];
    kept++;
    const uint64_t* row = mask + i * words;
    for (int64_t w = word + threadIdx.x; w < words; w += blockDim.x) removed[w] |= row[w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *count = kept;
}

at::Tensor nms_cuda(
    const at::Tensor& boxes,
    const at::Tensor& scores,
    double iou_threshold,
    int64_t max_keep) {
  TORCH_CHECK(boxes.is_cuda() && scores.is_cuda(), "custom_ops::nms: CUDA tensors expected");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "boxes must be (N, 4), got ",
              boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0),
              "scores must be (N,) with N = ", boxes.size(0), ", got ", scores.sizes());
  c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t n = boxes.size(0);
  if (n == 0 || max_keep == 0) {
    return at::empty({0}, boxes.options().dtype(at::kLong));
  }
  const auto order = std::get<1>(scores.sort(/*stable=*/true, 0, /*descending=*/true));
  const auto sorted = boxes.index_select(0, order).contiguous();
  const int64_t words = (n + kWord - 1) / kWord;
  TORCH_CHECK(words * 8 <= 48 * 1024, "custom_ops::nms: at most ", 48 * 1024 / 8 * kWord,
              " boxes on CUDA, got ", n);
  auto mask = at::empty({n * words}, boxes.options().dtype(at::kLong));
  auto keep = at::empty({n}, boxes.options().dtype(at::kLong));
  auto count = at::empty({1}, boxes.options().dtype(at::kLong));
  auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(words), static_cast<unsigned>(words));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, sorted.scalar_type(), "custom_ops::nms", [&] {
        overlap_mask_kernel<scalar_t><<<grid, kWord, 0, stream>>>(
            n, words, static_cast<float>(iou_threshold), sorted.const_data_ptr<scalar_t>(),
            reinterpret_cast<uint64_t*>(mask.mutable_data_ptr<int64_t>()));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  greedy_kernel<<<1, kGatherThreads, words * sizeof(uint64_t), stream>>>(
      n, words, max_keep, reinterpret_cast<const uint64_t*>(mask.const_data_ptr<int64_t>()),
      order.const_data_ptr<int64_t>(), keep.mutable_data_ptr<int64_t>(),
      count.mutable_data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return keep.narrow(0, 0, count.item<int64_t>());
}

}  // namespace

TORCH_LIBRARY_IMPL(custom_ops, CUDA, m) {
  m.impl("nms", &nms_cuda);
}

}  // namespace custom_ops
