// CUDA implementation of the dispatch ops (see kernels/dispatch.h for the semantics).
//
//   gather:   for s in [0, N): xs[s, :] = x[rows[s], :]              one block-row per slot
//   combine:  for b in [0, B): y[b, :] = sum_k w[b,k] * ys[slot_of[b,k], :]
// Rows are copied with 16-byte vector loads/stores when the row size and both base pointers
// are 16-byte aligned, else element by element. Launched on the current stream; launches
// are checked. Preconditions (checked by dispatch.cpp): contiguous inputs, rows/slot_of int64
// on the same device, indices in range.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "kernels/dispatch_impl.h"

namespace tlmoe::kernels::detail {

namespace {

__global__ void gather_rows_vec16(const int4* __restrict__ x, const int64_t* __restrict__ rows,
                                  int4* __restrict__ out, int64_t n_rows, int64_t row_vecs) {
  for (int64_t s = blockIdx.x; s < n_rows; s += gridDim.x) {
    const int4* src = x + rows[s] * row_vecs;
    int4* dst = out + s * row_vecs;
    for (int64_t i = threadIdx.x; i < row_vecs; i += blockDim.x) dst[i] = src[i];
  }
}

__global__ void gather_rows_bytes(const unsigned char* __restrict__ x, const int64_t* __restrict__ rows,
                                  unsigned char* __restrict__ out, int64_t n_rows, int64_t row_bytes) {
  for (int64_t s = blockIdx.x; s < n_rows; s += gridDim.x) {
    const unsigned char* src = x + rows[s] * row_bytes;
    unsigned char* dst = out + s * row_bytes;
    for (int64_t i = threadIdx.x; i < row_bytes; i += blockDim.x) dst[i] = src[i];
  }
}

template <typename T>
__global__ void combine_rows_kernel(const T* __restrict__ ys, const T* __restrict__ w,
                                    const int64_t* __restrict__ slot_of, T* __restrict__ y, int64_t B,
                                    int64_t K, int64_t F) {
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
      float acc = 0.f;
      for (int64_t k = 0; k < K; ++k)
        acc += static_cast<float>(w[b * K + k]) * static_cast<float>(ys[slot_of[b * K + k] * F + f]);
      y[b * F + f] = static_cast<T>(acc);
    }
  }
}

template <>
__global__ void combine_rows_kernel<double>(const double* __restrict__ ys, const double* __restrict__ w,
                                            const int64_t* __restrict__ slot_of, double* __restrict__ y,
                                            int64_t B, int64_t K, int64_t F) {
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x)
    for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k) acc += w[b * K + k] * ys[slot_of[b * K + k] * F + f];
      y[b * F + f] = acc;
    }
}

int grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>(std::max<int64_t>(n, 1), 65535)); }

}  // namespace

at::Tensor gather_rows_cuda(const at::Tensor& x, const at::Tensor& rows) {
  const int64_t n = rows.size(0);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[0] = n;
  at::Tensor out = at::empty(shape, x.options());
  if (n == 0 || x.numel() == 0) return out;
  const int64_t row_bytes = x.numel() / x.size(0) * x.element_size();
  auto stream = at::cuda::getCurrentCUDAStream();
  const bool aligned = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0;
  if (aligned) {
    gather_rows_vec16<<<grid_for(n), 256, 0, stream>>>(static_cast<const int4*>(x.data_ptr()),
                                                       rows.data_ptr<int64_t>(), static_cast<int4*>(out.data_ptr()),
                                                       n, row_bytes / 16);
  } else {
    gather_rows_bytes<<<grid_for(n), 256, 0, stream>>>(static_cast<const unsigned char*>(x.data_ptr()),
                                                       rows.data_ptr<int64_t>(),
                                                       static_cast<unsigned char*>(out.data_ptr()), n, row_bytes);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor combine_rows_cuda(const at::Tensor& ys, const at::Tensor& w, const at::Tensor& slot_of) {
  const int64_t B = slot_of.size(0), K = slot_of.size(1);
  std::vector<int64_t> shape(ys.sizes().begin(), ys.sizes().end());
  shape[0] = B;
  at::Tensor y = at::empty(shape, ys.options());
  if (y.numel() == 0) return y;
  const int64_t F = ys.numel() / std::max<int64_t>(ys.size(0), 1);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys.scalar_type(), "combine_rows_cuda", [&] {
    combine_rows_kernel<scalar_t><<<grid_for(B), 256, 0, stream>>>(
        ys.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), slot_of.data_ptr<int64_t>(), y.data_ptr<scalar_t>(), B, K,
        F);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace tlmoe::kernels::detail
