// CUDA kernels of the dispatch ops (semantics in kernels/dispatch.h, CPU reference in
// dispatch_cpu.cpp).
//
//   plan:      one block; warp w owns experts w, w+W, ...: it walks idx 32 entries at a time,
//              __ballot_sync marks its entries, popc gives each its stable rank.
//              pass 1 counts, thread 0 scans, pass 2 writes rows and slot_of.
//   gather:    for s, j:  xs_v[s, j] = x_v[rows[s], j]                       (V-element rows of 16-byte vectors)
//   combine:   for b, j:  y_v[b, j]  = sum_k w[b,k] * ys_v[slot_of[b,k], j]
//   backward:  for b, k, j:  dys_v[slot_of[b,k], j] = w[b,k] * dy_v[b, j];  dw[b,k] = <dy[b], ys[slot_of[b,k]]>
//              (one block per (b,k) for the dot products, fp32/fp64 accumulation)
// Grids are 2-D: blockIdx.y walks the rows (the source row is looked up once per block),
// blockIdx.x and the threads stride along the row; no integer division per element.
// Rows move as 16-byte vectors when the row size and the base pointers allow it (always for
// contiguous fp32 rows of a multiple of 4 elements), else element by element. Launched on the
// current stream; every launch is checked. Preconditions (checked in dispatch.cpp): contiguous
// inputs; rows/slot_of int64 on the data's device and in range; w in the accumulation dtype.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "kernels/dispatch_impl.h"

namespace tlmoe::kernels::detail {

namespace {

constexpr int kThreads = 256;

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// 16 bytes of T.
template <typename T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
bool aligned4(const void* p) { return reinterpret_cast<uintptr_t>(p) % 4 == 0; }

int blocks_for(int64_t work) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t need = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(need, static_cast<int64_t>(sms) * 16)));
}

// rows x row_len work items: y covers the rows (capped, the kernels stride), x enough blocks per
// row to give the whole grid about 8 blocks per multiprocessor.
dim3 grid_2d(int64_t rows, int64_t row_len) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t y = std::max<int64_t>(1, std::min<int64_t>(rows, 65535));
  const int64_t per_row = (row_len + kThreads - 1) / kThreads;
  const int64_t x = std::max<int64_t>(1, std::min<int64_t>(per_row, (sms * 8 + y - 1) / y));
  return dim3(static_cast<unsigned>(x), static_cast<unsigned>(y));
}

std::vector<int64_t> with_rows(const at::Tensor& t, int64_t n) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape[0] = n;
  return shape;
}

// ---- plan -------------------------------------------------------------------------------------

__global__ void plan_kernel(const int64_t* __restrict__ idx, int64_t N, int64_t K, int64_t E,
                            int64_t* __restrict__ counts, int64_t* __restrict__ offsets, int64_t* __restrict__ rows,
                            int64_t* __restrict__ slot_of, int64_t* __restrict__ invalid) {
  extern __shared__ int64_t base[];  // [E]: running slot of each expert
  __shared__ unsigned long long bad;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  // pass 1: counts (and out-of-range entries)
  for (int64_t e = warp; e < E; e += warps) {
    int64_t c = 0;
    for (int64_t i0 = 0; i0 < N; i0 += 32) {
      const int64_t i = i0 + lane;
      const bool mine = i < N && idx[i] == e;
      c += __popc(__ballot_sync(0xffffffffu, mine));
    }
    if (lane == 0) counts[e] = c;
  }
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
    if (idx[i] < 0 || idx[i] >= E) atomicAdd(&bad, 1ull);
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t acc = 0;
    for (int64_t e = 0; e < E; ++e) {
      offsets[e] = acc;
      base[e] = acc;
      acc += counts[e];
    }
    offsets[E] = acc;
    *invalid = static_cast<int64_t>(bad);
  }
  __syncthreads();
  if (bad) return;
  // pass 2: stable slots
  for (int64_t e = warp; e < E; e += warps) {
    int64_t next = base[e];
    for (int64_t i0 = 0; i0 < N; i0 += 32) {
      const int64_t i = i0 + lane;
      const bool mine = i < N && idx[i] == e;
      const unsigned m = __ballot_sync(0xffffffffu, mine);
      if (mine) {
        const int64_t s = next + __popc(m & ((1u << lane) - 1u));
        rows[s] = i / K;
        slot_of[i] = s;
      }
      next += __popc(m);
    }
  }
}

// ---- gather -----------------------------------------------------------------------------------

template <typename V>
__global__ void gather_kernel(const V* __restrict__ x, const int64_t* __restrict__ rows, V* __restrict__ out,
                              int64_t n_rows, int64_t row_len) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t s = blockIdx.y; s < n_rows; s += gridDim.y) {
    const V* src = x + rows[s] * row_len;
    V* dst = out + s * row_len;
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < row_len; j += stride)
      dst[j] = src[j];
  }
}

// ---- combine ----------------------------------------------------------------------------------

template <typename T, typename A, bool kWeighted>
__global__ void combine_vec_kernel(const Pack<T>* __restrict__ ys, const A* __restrict__ w,
                                   const int64_t* __restrict__ slot_of, Pack<T>* __restrict__ y, int64_t B, int64_t K,
                                   int64_t row_len) {
  constexpr int N = Pack<T>::N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < row_len; j += stride) {
      A acc[N];
#pragma unroll
      for (int t = 0; t < N; ++t) acc[t] = A(0);
      for (int64_t k = 0; k < K; ++k) {
        const Pack<T> p = ys[slot_of[b * K + k] * row_len + j];
        const A wk = kWeighted ? w[b * K + k] : A(1);
#pragma unroll
        for (int t = 0; t < N; ++t) acc[t] += wk * static_cast<A>(p.v[t]);
      }
      Pack<T> o;
#pragma unroll
      for (int t = 0; t < N; ++t) o.v[t] = static_cast<T>(acc[t]);
      y[b * row_len + j] = o;
    }
  }
}

template <typename T, typename A, bool kWeighted>
__global__ void combine_scalar_kernel(const T* __restrict__ ys, const A* __restrict__ w,
                                      const int64_t* __restrict__ slot_of, T* __restrict__ y, int64_t B, int64_t K,
                                      int64_t F) {
  const int64_t total = B * F;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / F, f = i - b * F;
    A acc = 0;
    for (int64_t k = 0; k < K; ++k) acc += (kWeighted ? w[b * K + k] : A(1)) * static_cast<A>(ys[slot_of[b * K + k] * F + f]);
    y[i] = static_cast<T>(acc);
  }
}

// ---- combine backward -------------------------------------------------------------------------

// dys[slot_of[b,k], :] = w[b,k] * dy[b, :]
template <typename T, typename A>
__global__ void scale_scatter_vec_kernel(const Pack<T>* __restrict__ dy, const A* __restrict__ w,
                                         const int64_t* __restrict__ slot_of, Pack<T>* __restrict__ dys, int64_t BK,
                                         int64_t K, int64_t row_len) {
  constexpr int N = Pack<T>::N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t bk = blockIdx.y; bk < BK; bk += gridDim.y) {
    const A wk = w[bk];
    const Pack<T>* src = dy + (bk / K) * row_len;
    Pack<T>* dst = dys + slot_of[bk] * row_len;
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < row_len; j += stride) {
      const Pack<T> g = src[j];
      Pack<T> o;
#pragma unroll
      for (int t = 0; t < N; ++t) o.v[t] = static_cast<T>(wk * static_cast<A>(g.v[t]));
      dst[j] = o;
    }
  }
}

template <typename T, typename A>
__global__ void scale_scatter_scalar_kernel(const T* __restrict__ dy, const A* __restrict__ w,
                                            const int64_t* __restrict__ slot_of, T* __restrict__ dys, int64_t BK,
                                            int64_t K, int64_t F) {
  const int64_t total = BK * F;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t bk = i / F, f = i - bk * F;
    dys[slot_of[bk] * F + f] = static_cast<T>(w[bk] * static_cast<A>(dy[(bk / K) * F + f]));
  }
}

// dw[b,k] = <dy[b,:], ys[slot_of[b,k],:]>: one block per (b,k), block reduction.
template <typename T, typename A>
__global__ void row_dot_kernel(const T* __restrict__ dy, const T* __restrict__ ys, const int64_t* __restrict__ slot_of,
                               A* __restrict__ dw, int64_t K, int64_t F) {
  __shared__ A partial[kThreads / 32];
  const int64_t bk = blockIdx.x;
  const T* g = dy + (bk / K) * F;
  const T* y = ys + slot_of[bk] * F;
  A acc = 0;
  for (int64_t f = threadIdx.x; f < F; f += blockDim.x) acc += static_cast<A>(g[f]) * static_cast<A>(y[f]);
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    acc = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : A(0);
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (threadIdx.x == 0) dw[bk] = acc;
  }
}

}  // namespace

PlanTensors plan_cuda(const at::Tensor& idx, int64_t num_experts) {
  c10::cuda::CUDAGuard guard(idx.device());
  const int64_t B = idx.size(0), K = idx.size(1), N = B * K;
  auto opts = idx.options().dtype(at::kLong);
  at::Tensor counts = at::empty({num_experts}, opts), offsets = at::empty({num_experts + 1}, opts);
  at::Tensor rows = at::empty({N}, opts), slot_of = at::empty({B, K}, opts), invalid = at::empty({}, opts);
  const size_t shared = static_cast<size_t>(num_experts) * sizeof(int64_t);
  TORCH_CHECK(shared <= 40 * 1024, "dispatch_plan: ", num_experts, " experts exceed the plan kernel's shared memory");
  plan_kernel<<<1, 1024, shared, at::cuda::getCurrentCUDAStream()>>>(
      idx.data_ptr<int64_t>(), N, K, num_experts, counts.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(),
      rows.data_ptr<int64_t>(), slot_of.data_ptr<int64_t>(), invalid.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {counts, offsets, rows, slot_of, invalid};
}

at::Tensor gather_rows_cuda(const at::Tensor& x, const at::Tensor& rows) {
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = rows.size(0);
  at::Tensor out = at::empty(with_rows(x, n), x.options());
  if (n == 0 || x.numel() == 0) return out;
  const int64_t row_bytes = x.numel() / x.size(0) * x.element_size();
  auto stream = at::cuda::getCurrentCUDAStream();
  if (row_bytes % 16 == 0 && aligned16(x.data_ptr()) && aligned16(out.data_ptr())) {
    const int64_t len = row_bytes / 16;
    gather_kernel<int4><<<grid_2d(n, len), kThreads, 0, stream>>>(
        static_cast<const int4*>(x.data_ptr()), rows.data_ptr<int64_t>(), static_cast<int4*>(out.data_ptr()), n, len);
  } else if (row_bytes % 4 == 0 && aligned4(x.data_ptr()) && aligned4(out.data_ptr())) {
    const int64_t len = row_bytes / 4;
    gather_kernel<int><<<grid_2d(n, len), kThreads, 0, stream>>>(
        static_cast<const int*>(x.data_ptr()), rows.data_ptr<int64_t>(), static_cast<int*>(out.data_ptr()), n, len);
  } else {
    gather_kernel<unsigned char><<<grid_2d(n, row_bytes), kThreads, 0, stream>>>(
        static_cast<const unsigned char*>(x.data_ptr()), rows.data_ptr<int64_t>(),
        static_cast<unsigned char*>(out.data_ptr()), n, row_bytes);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor combine_rows_cuda(const at::Tensor& ys, const at::Tensor& w, const at::Tensor& slot_of) {
  c10::cuda::CUDAGuard guard(ys.device());
  const int64_t B = slot_of.size(0), K = slot_of.size(1);
  at::Tensor y = at::empty(with_rows(ys, B), ys.options());
  if (y.numel() == 0) return y;
  const int64_t F = ys.numel() / ys.size(0);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys.scalar_type(), "combine_rows_cuda", [&] {
    using A = acc_t<scalar_t>;
    const A* wp = w.defined() ? w.data_ptr<A>() : nullptr;
    constexpr int N = Pack<scalar_t>::N;
    const bool vec = F % N == 0 && aligned16(ys.data_ptr()) && aligned16(y.data_ptr());
    auto launch = [&](auto weighted) {
      constexpr bool kW = decltype(weighted)::value;
      if (vec) {
        const int64_t len = F / N;
        combine_vec_kernel<scalar_t, A, kW><<<grid_2d(B, len), kThreads, 0, stream>>>(
            reinterpret_cast<const Pack<scalar_t>*>(ys.data_ptr()), wp, slot_of.data_ptr<int64_t>(),
            reinterpret_cast<Pack<scalar_t>*>(y.data_ptr()), B, K, len);
      } else {
        combine_scalar_kernel<scalar_t, A, kW><<<blocks_for(B * F), kThreads, 0, stream>>>(
            ys.data_ptr<scalar_t>(), wp, slot_of.data_ptr<int64_t>(), y.data_ptr<scalar_t>(), B, K, F);
      }
    };
    if (wp) launch(std::true_type{});
    else launch(std::false_type{});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

std::tuple<at::Tensor, at::Tensor> combine_rows_backward_cuda(const at::Tensor& dy, const at::Tensor& ys,
                                                              const at::Tensor& w, const at::Tensor& slot_of) {
  c10::cuda::CUDAGuard guard(ys.device());
  const int64_t B = slot_of.size(0), K = slot_of.size(1);
  at::Tensor dys = at::empty_like(ys);
  at::Tensor dw = at::empty({B, K}, w.options());
  if (ys.numel() == 0) return {dys, dw.zero_()};
  const int64_t F = ys.numel() / ys.size(0);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys.scalar_type(), "combine_rows_backward_cuda", [&] {
    using A = acc_t<scalar_t>;
    constexpr int N = Pack<scalar_t>::N;
    const bool vec = F % N == 0 && aligned16(dy.data_ptr()) && aligned16(dys.data_ptr());
    if (vec) {
      const int64_t len = F / N;
      scale_scatter_vec_kernel<scalar_t, A><<<grid_2d(B * K, len), kThreads, 0, stream>>>(
          reinterpret_cast<const Pack<scalar_t>*>(dy.data_ptr()), w.data_ptr<A>(), slot_of.data_ptr<int64_t>(),
          reinterpret_cast<Pack<scalar_t>*>(dys.data_ptr()), B * K, K, len);
    } else {
      scale_scatter_scalar_kernel<scalar_t, A><<<blocks_for(B * K * F), kThreads, 0, stream>>>(
          dy.data_ptr<scalar_t>(), w.data_ptr<A>(), slot_of.data_ptr<int64_t>(), dys.data_ptr<scalar_t>(), B * K, K, F);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    row_dot_kernel<scalar_t, A><<<static_cast<unsigned>(B * K), kThreads, 0, stream>>>(
        dy.data_ptr<scalar_t>(), ys.data_ptr<scalar_t>(), slot_of.data_ptr<int64_t>(), dw.data_ptr<A>(), K, F);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dys, dw};
}

}  // namespace tlmoe::kernels::detail
