// CPU reference of the dispatch ops: parallel over rows, one contiguous copy per row.
//
//   plan:     counts[e] = #{(b,k): idx[b,k] = e}; offsets = exclusive_scan(counts);
//             slots filled in (b,k) order within each expert (stable).
//   gather:   for s in slots:  xs[s,:] = x[rows[s],:]
//   scatter:  for s in slots:  dx[rows[s],:] += dxs[s,:]      (serial per destination row)
//   combine:  for b: y[b,:] = sum_k w[b,k] * ys[slot_of[b,k],:]
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstring>
#include <vector>

#include "kernels/dispatch_impl.h"

namespace tlmoe::kernels::detail {

DispatchPlan make_plan_cpu(const torch::Tensor& idx, int64_t num_experts) {
  const int64_t B = idx.size(0), K = idx.size(1);
  auto opts = torch::TensorOptions().dtype(torch::kLong);
  torch::Tensor counts = torch::zeros({num_experts}, opts);
  torch::Tensor offsets = torch::zeros({num_experts + 1}, opts);
  torch::Tensor rows = torch::empty({B * K}, opts);
  torch::Tensor slot_of = torch::empty({B, K}, opts);
  const int64_t* id = idx.data_ptr<int64_t>();
  int64_t* cnt = counts.data_ptr<int64_t>();
  int64_t* off = offsets.data_ptr<int64_t>();
  for (int64_t i = 0; i < B * K; ++i) ++cnt[id[i]];
  for (int64_t e = 0; e < num_experts; ++e) off[e + 1] = off[e] + cnt[e];
  std::vector<int64_t> fill(off, off + num_experts);
  int64_t* r = rows.data_ptr<int64_t>();
  int64_t* so = slot_of.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) {
      int64_t s = fill[id[b * K + k]]++;
      r[s] = b;
      so[b * K + k] = s;
    }
  return {counts, offsets, rows, slot_of};
}

torch::Tensor gather_rows_cpu(const torch::Tensor& x, const torch::Tensor& rows) {
  const int64_t n = rows.size(0);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[0] = n;
  torch::Tensor out = torch::empty(shape, x.options());
  if (n == 0 || x.numel() == 0) return out;
  const int64_t row_bytes = x.numel() / x.size(0) * x.element_size();
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t* r = rows.data_ptr<int64_t>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) std::memcpy(dst + s * row_bytes, src + r[s] * row_bytes, row_bytes);
  });
  return out;
}

torch::Tensor scatter_add_rows(const torch::Tensor& xs, const torch::Tensor& rows, int64_t batch) {
  std::vector<int64_t> shape(xs.sizes().begin(), xs.sizes().end());
  shape[0] = batch;
  torch::Tensor out = torch::zeros(shape, xs.options());
  if (xs.numel() == 0) return out;
  // index_add_ is the reference accumulation (handles every dtype, deterministic on CPU).
  out.index_add_(0, rows, xs);
  return out;
}

torch::Tensor combine_rows_cpu(const torch::Tensor& ys, const torch::Tensor& w, const torch::Tensor& slot_of) {
  const int64_t B = slot_of.size(0), K = slot_of.size(1);
  torch::Tensor picked = ys.index_select(0, slot_of.reshape({-1}));  // [B*K, ...]
  std::vector<int64_t> wshape = {B, K};
  for (int64_t d = 1; d < ys.dim(); ++d) wshape.push_back(1);
  auto sizes = picked.sizes().vec();
  sizes.erase(sizes.begin());
  sizes.insert(sizes.begin(), {B, K});
  return (picked.view(sizes) * w.view(wshape)).sum(1);
}

std::pair<torch::Tensor, torch::Tensor> combine_rows_backward(const torch::Tensor& dy, const torch::Tensor& ys,
                                                                  const torch::Tensor& w,
                                                                  const torch::Tensor& slot_of) {
  const int64_t B = slot_of.size(0), K = slot_of.size(1);
  auto flat_slots = slot_of.reshape({-1});
  // d ys[slot_of[b,k]] = w[b,k] * dy[b]   (each slot belongs to exactly one (b,k))
  auto feat = dy.reshape({B, 1, -1});                                   // [B,1,F]
  torch::Tensor contrib = (feat * w.unsqueeze(-1)).reshape({B * K, -1});  // [B*K,F]
  torch::Tensor dys = torch::zeros({ys.size(0), feat.size(2)}, ys.options());
  dys.index_copy_(0, flat_slots, contrib);
  // d w[b,k] = <dy[b], ys[slot_of[b,k]]>
  torch::Tensor picked = ys.index_select(0, flat_slots).reshape({B, K, -1});
  torch::Tensor dw = (picked * feat).sum(-1);
  return {dys.view(ys.sizes()), dw};
}

}  // namespace tlmoe::kernels::detail
