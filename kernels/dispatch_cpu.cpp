// CPU kernels of the dispatch ops: the reference and the production CPU path. Parallel over
// rows (at::parallel_for), one wide copy or one fused pass per row; no atomics, no zero fills.
//
//   plan:      counts[e] = #{(b,k): idx[b,k] = e}; offsets = exclusive_scan(counts);
//              slots filled in (b,k) order within each expert (stable); invalid = #{idx outside [0,E)}
//   gather:    for s:     xs[s,:] = x[rows[s],:]                          (memcpy of one row)
//   combine:   for b:     y[b,:] = sum_k w[b,k] * ys[slot_of[b,k],:]      (w undefined: w = 1)
//   backward:  for b, k:  dys[slot_of[b,k],:] = w[b,k] * dy[b,:]
//                         dw[b,k] = <dy[b,:], ys[slot_of[b,k],:]>
// Preconditions (unchecked here, checked in dispatch.cpp): contiguous inputs; rows/slot_of int64
// and in range; w (when defined) in the accumulation type acc_t (double for double, else float);
// slot_of a permutation of [0, B*K) (every slot written exactly once by the backward).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstring>
#include <vector>

#include "kernels/dispatch_impl.h"

namespace tlmoe::kernels::detail {

namespace {

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Rows per parallel task: about 64 KiB of work, at least one row.
int64_t grain_rows(int64_t row_bytes) { return std::max<int64_t>(1, (64 << 10) / std::max<int64_t>(row_bytes, 1)); }

std::vector<int64_t> with_rows(const torch::Tensor& t, int64_t n) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape[0] = n;
  return shape;
}

// fp32 row loops, compiled twice (AVX2 + FMA and baseline x86-64) and picked at load time: the
// build targets baseline x86-64, whose 4-wide SSE loops are compute-bound on L2-resident rows.
__attribute__((target_clones("avx2,fma", "default"))) void scale_row_f32(const float* src, float w, int64_t n,
                                                                        float* dst) {
  for (int64_t f = 0; f < n; ++f) dst[f] = w * src[f];
}
__attribute__((target_clones("avx2,fma", "default"))) void axpy_row_f32(const float* src, float w, int64_t n,
                                                                       float* acc) {
  for (int64_t f = 0; f < n; ++f) acc[f] += w * src[f];
}

// Row copy as a plain vector loop (not memcpy: glibc's large-copy path was 25% slower than
// a vector loop for 1.5 MB rows on the development machine's AMD EPYC); word-aligned rows only.
__attribute__((target_clones("avx2", "default"), optimize("no-tree-loop-distribute-patterns"))) void copy_words(
    const uint32_t* src, int64_t n, uint32_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// One output row: y = sum_k w_k * src_k, accumulated in L1-sized chunks of acc_t so that the
// output is written once (fp16/bf16 rounded once).
template <typename T>
void combine_row(const T* const* src, const acc_t<T>* w, int64_t K, int64_t F, T* dst) {
  using A = acc_t<T>;
  if constexpr (std::is_same_v<T, float>) {
    if (K == 1) return scale_row_f32(src[0], w ? w[0] : 1.f, F, dst);
    // fp32: accumulate in the output row, 16 KiB at a time so the partial sums stay in L1
    constexpr int64_t kChunk = 4096;
    for (int64_t f0 = 0; f0 < F; f0 += kChunk) {
      const int64_t n = std::min(kChunk, F - f0);
      scale_row_f32(src[0] + f0, w ? w[0] : 1.f, n, dst + f0);
      for (int64_t k = 1; k < K; ++k) axpy_row_f32(src[k] + f0, w ? w[k] : 1.f, n, dst + f0);
    }
    return;
  }
  if (K == 1) {  // a scaled copy, one pass
    const A w0 = w ? w[0] : A(1);
    const T* s0 = src[0];
    for (int64_t f = 0; f < F; ++f) dst[f] = static_cast<T>(w0 * static_cast<A>(s0[f]));
    return;
  }
  constexpr int64_t kChunk = 1024;
  A acc[kChunk];
  for (int64_t f0 = 0; f0 < F; f0 += kChunk) {
    const int64_t n = std::min(kChunk, F - f0);
    const A w0 = w ? w[0] : A(1);
    const T* s0 = src[0] + f0;
    for (int64_t f = 0; f < n; ++f) acc[f] = w0 * static_cast<A>(s0[f]);
    for (int64_t k = 1; k < K; ++k) {
      const A wk = w ? w[k] : A(1);
      const T* sk = src[k] + f0;
      for (int64_t f = 0; f < n; ++f) acc[f] += wk * static_cast<A>(sk[f]);
    }
    T* d = dst + f0;
    for (int64_t f = 0; f < n; ++f) d[f] = static_cast<T>(acc[f]);
  }
}

// <a, b> over n elements with 8 independent partial sums (vectorisable without fast-math).
template <typename T>
acc_t<T> row_dot(const T* a, const T* b, int64_t n) {
  using A = acc_t<T>;
  A part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t f = 0;
  for (; f + 8 <= n; f += 8)
    for (int j = 0; j < 8; ++j) part[j] += static_cast<A>(a[f + j]) * static_cast<A>(b[f + j]);
  A sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; f < n; ++f) sum += static_cast<A>(a[f]) * static_cast<A>(b[f]);
  return sum;
}

}  // namespace

PlanTensors plan_cpu(const torch::Tensor& idx, int64_t num_experts) {
  const int64_t B = idx.size(0), K = idx.size(1), N = B * K;
  auto opts = torch::TensorOptions().dtype(torch::kLong);
  torch::Tensor counts = torch::zeros({num_experts}, opts);
  torch::Tensor offsets = torch::zeros({num_experts + 1}, opts);
  torch::Tensor rows = torch::empty({N}, opts);
  torch::Tensor slot_of = torch::empty({B, K}, opts);
  torch::Tensor invalid = torch::zeros({}, opts);
  const int64_t* id = idx.data_ptr<int64_t>();
  int64_t* cnt = counts.data_ptr<int64_t>();
  int64_t* off = offsets.data_ptr<int64_t>();
  int64_t bad = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (id[i] < 0 || id[i] >= num_experts) ++bad;
    else ++cnt[id[i]];
  }
  invalid.fill_(bad);
  if (bad) return {counts, offsets, rows, slot_of, invalid};  // the caller reports the range error
  for (int64_t e = 0; e < num_experts; ++e) off[e + 1] = off[e] + cnt[e];
  std::vector<int64_t> fill(off, off + num_experts);
  int64_t* r = rows.data_ptr<int64_t>();
  int64_t* so = slot_of.data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    const int64_t s = fill[id[i]]++;
    r[s] = i / K;
    so[i] = s;
  }
  return {counts, offsets, rows, slot_of, invalid};
}

torch::Tensor gather_rows_cpu(const torch::Tensor& x, const torch::Tensor& rows) {
  const int64_t n = rows.size(0), B = x.size(0);
  torch::Tensor out = torch::empty(with_rows(x, n), x.options());
  if (n == 0 || x.numel() == 0) return out;
  const int64_t row_bytes = x.numel() / B * x.element_size();
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t* r = rows.data_ptr<int64_t>();
  const bool words = row_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(dst) % 4 == 0;
  at::parallel_for(0, n, grain_rows(row_bytes), [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      TORCH_CHECK(r[s] >= 0 && r[s] < B, "gather_rows: row index ", r[s], " out of range [0, ", B, ")");
      const char* from = src + r[s] * row_bytes;
      char* to = dst + s * row_bytes;
      if (words)
        copy_words(reinterpret_cast<const uint32_t*>(from), row_bytes / 4, reinterpret_cast<uint32_t*>(to));
      else
        std::memcpy(to, from, row_bytes);
    }
  });
  return out;
}

torch::Tensor combine_rows_cpu(const torch::Tensor& ys, const torch::Tensor& w, const torch::Tensor& slot_of) {
  const int64_t B = slot_of.size(0), K = slot_of.size(1);
  torch::Tensor y = torch::empty(with_rows(ys, B), ys.options());
  if (y.numel() == 0) return y;
  const int64_t F = ys.numel() / ys.size(0);
  const int64_t* so = slot_of.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys.scalar_type(), "combine_rows_cpu", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* src = ys.data_ptr<scalar_t>();
    scalar_t* dst = y.data_ptr<scalar_t>();
    const A* wp = w.defined() ? w.data_ptr<A>() : nullptr;
    at::parallel_for(0, B, grain_rows(F * K * ys.element_size()), [&](int64_t begin, int64_t end) {
      std::vector<const scalar_t*> rows(K);
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t k = 0; k < K; ++k) rows[k] = src + so[b * K + k] * F;
        if (K == 1 && !wp) {
          std::memcpy(dst + b * F, rows[0], F * sizeof(scalar_t));
          continue;
        }
        combine_row<scalar_t>(rows.data(), wp ? wp + b * K : nullptr, K, F, dst + b * F);
      }
    });
  });
  return y;
}

std::tuple<torch::Tensor, torch::Tensor> combine_rows_backward_cpu(const torch::Tensor& dy, const torch::Tensor& ys,
                                                                   const torch::Tensor& w,
                                                                   const torch::Tensor& slot_of) {
  const int64_t B = slot_of.size(0), K = slot_of.size(1);
  torch::Tensor dys = torch::empty_like(ys);
  torch::Tensor dw = torch::empty({B, K}, w.options());
  if (ys.numel() == 0) return {dys, dw.zero_()};
  const int64_t F = ys.numel() / ys.size(0);
  const int64_t* so = slot_of.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ys.scalar_type(), "combine_rows_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* g = dy.data_ptr<scalar_t>();
    const scalar_t* y = ys.data_ptr<scalar_t>();
    scalar_t* d = dys.data_ptr<scalar_t>();
    const A* wp = w.data_ptr<A>();
    A* dwp = dw.data_ptr<A>();
    at::parallel_for(0, B, grain_rows(3 * F * K * ys.element_size()), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* gb = g + b * F;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = so[b * K + k];
          const A wk = wp[b * K + k];
          const scalar_t* ysr = y + s * F;
          scalar_t* dr = d + s * F;
          for (int64_t f = 0; f < F; ++f) dr[f] = static_cast<scalar_t>(wk * static_cast<A>(gb[f]));
          dwp[b * K + k] = row_dot(gb, ysr, F);
        }
      }
    });
  });
  return {dys, dw};
}

}  // namespace tlmoe::kernels::detail
