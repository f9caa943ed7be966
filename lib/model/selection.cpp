#include "model/selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "common/error.h"

namespace tlmoe::model {

namespace {

using torch::Tensor;

at::ScalarType compute_dtype(const Tensor& t) {
  return t.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

// Random draws happen on the generator's device (or `device` with its default generator) and
// are moved to `device`.
torch::Device draw_device(const std::optional<at::Generator>& gen, torch::Device device) {
  return gen.has_value() ? gen->device() : device;
}

Tensor draw_uniform(at::IntArrayRef sizes, const std::optional<at::Generator>& gen, at::ScalarType dtype,
                    torch::Device device) {
  auto opts = torch::TensorOptions().dtype(dtype).device(draw_device(gen, device));
  return torch::rand(sizes, gen, opts).to(device);
}

Tensor draw_index(int64_t high, at::IntArrayRef sizes, const std::optional<at::Generator>& gen,
                  torch::Device device) {
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(draw_device(gen, device));
  return torch::randint(high, sizes, gen, opts).to(device);
}

// g ~ Gumbel(0,1), one per element of x (see the recipe in selection.h).
Tensor gumbel_noise(const Tensor& x, const std::optional<at::Generator>& gen) {
  const double tiny = x.scalar_type() == torch::kDouble ? std::numeric_limits<double>::min()
                                                        : static_cast<double>(std::numeric_limits<float>::min());
  auto u = draw_uniform(x.sizes(), gen, x.scalar_type(), x.device()).clamp_min(tiny);
  return -torch::log(-torch::log(u));
}

// One-hot [.., E] of idx [.., 1] in the dtype of `like`.
Tensor one_hot_like(const Tensor& idx, const Tensor& like) {
  return torch::zeros_like(like).scatter_(-1, idx, 1.0);
}

Routes select_softmax(const Tensor& x, const SelectionOptions& o, const std::optional<at::Generator>&) {
  return {torch::softmax(x / o.tau, -1), Tensor(), false};
}

Routes select_gumbel(const Tensor& x, const SelectionOptions& o, const std::optional<at::Generator>& gen) {
  const bool noisy = o.training || o.sample_at_eval;
  auto y = noisy ? (x + gumbel_noise(x, gen)) / o.tau : x / o.tau;  // [L,B,E]
  return {torch::softmax(y, -1), Tensor(), false};
}

Routes select_gumbel_st(const Tensor& x, const SelectionOptions& o, const std::optional<at::Generator>& gen) {
  const bool noisy = o.training || o.sample_at_eval;
  auto y = noisy ? (x + gumbel_noise(x, gen)) / o.tau : x / o.tau;  // [L,B,E]
  auto soft = torch::softmax(y, -1);                                // [L,B,E]
  // Eval without noise: argmax of the logits themselves (no rounding through the division).
  auto idx = (noisy ? y : x).argmax(-1, /*keepdim=*/true);  // [L,B,1]
  auto hard = one_hot_like(idx, soft);                       // [L,B,E]
  // Straight-through: forward exactly `hard` (s - s.detach() is exactly 0), backward d soft.
  return {hard + (soft - soft.detach()), idx, true};
}

Routes select_topk(const Tensor& x, const SelectionOptions& o, const std::optional<at::Generator>&) {
  const int64_t E = x.size(-1);
  if (o.top_k < 1 || o.top_k > E)
    throw ConfigError("", "routing.top_k",
                      "top_k must be in [1, " + std::to_string(E) + "] (the number of experts), got " +
                          std::to_string(o.top_k));
  auto [vals, idx] = x.topk(o.top_k, -1, /*largest=*/true, /*sorted=*/true);  // [L,B,K] each
  auto p = torch::softmax(vals / o.tau, -1);                                    // [L,B,K]
  return {torch::zeros_like(x).scatter(-1, idx, p), idx, true};
}

using SelectFn = Routes (*)(const Tensor&, const SelectionOptions&, const std::optional<at::Generator>&);
struct SelectionEntry {
  const char* name;
  SelectFn fn;
};
constexpr SelectionEntry kSelections[] = {
    {"softmax", select_softmax},
    {"gumbel", select_gumbel},
    {"gumbel_st", select_gumbel_st},
    {"topk", select_topk},
};

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// Uniform integer in [0, n) from a 64-bit engine, without modulo bias.
uint64_t bounded(std::mt19937_64& rng, uint64_t n) {
  const uint64_t rem = (std::numeric_limits<uint64_t>::max() % n + 1) % n;  // 2^64 mod n
  uint64_t v;
  do {
    v = rng();
  } while (rem != 0 && v > std::numeric_limits<uint64_t>::max() - rem);
  return v % n;
}

}  // namespace

std::vector<std::string> selection_kinds() {
  std::vector<std::string> v;
  for (const auto& e : kSelections) v.emplace_back(e.name);
  return v;
}

Routes select_routes(const torch::Tensor& logits, const SelectionOptions& o, std::optional<at::Generator> gen) {
  const SelectionEntry* entry = nullptr;
  for (const auto& e : kSelections)
    if (o.kind == e.name) entry = &e;
  if (!entry)
    throw ConfigError("", "routing.selection",
                      "unknown selection '" + o.kind + "'; valid: " + join(selection_kinds()));
  TORCH_CHECK(logits.dim() == 3 && logits.size(2) > 0, "select_routes expects logits [L,B,E], got ",
              logits.sizes());
  TORCH_CHECK(o.tau > 0.0 && std::isfinite(o.tau), "selection temperature must be finite and > 0, got ", o.tau);
  return entry->fn(logits.to(compute_dtype(logits)), o, gen);
}

double temperature_at(int64_t step, double tau0, double tau_min, double rate) {
  return std::max(tau0 * std::exp(-rate * static_cast<double>(step)), tau_min);
}

Routes explore(const Routes& r, double eps, int64_t encoder_layers, bool reference_compat,
               std::optional<at::Generator> gen) {
  TORCH_CHECK(eps >= 0.0 && eps <= 1.0, "exploration epsilon must be in [0, 1], got ", eps);
  const auto& w = r.weights;  // [L,B,E]
  TORCH_CHECK(w.defined() && w.dim() == 3, "explore expects weights [L,B,E], got ",
              w.defined() ? w.sizes() : at::IntArrayRef{});
  const int64_t L = w.size(0), B = w.size(1), E = w.size(2);
  TORCH_CHECK(encoder_layers >= 0 && encoder_layers <= L, "explore: encoder_layers=", encoder_layers,
              " is outside [0, ", L, "]");
  if (eps == 0.0) return r;

  const auto device = w.device();
  auto replace = draw_uniform({L, B}, gen, torch::kDouble, device).lt(eps);  // [L,B] bool
  auto pick = draw_index(E, {L, B}, gen, device);                            // [L,B]
  auto onehot = one_hot_like(pick.unsqueeze(-1), w);                          // [L,B,E]

  Tensor replacement = onehot;
  bool uniform_used = false;
  if (reference_compat && encoder_layers < L) {
    auto is_decoder = torch::arange(L, torch::TensorOptions().device(device)).ge(encoder_layers).view({L, 1});  // [L,1]
    replacement = torch::where(is_decoder.unsqueeze(-1), torch::full_like(w, 1.0 / static_cast<double>(E)), onehot);
    uniform_used = replace.logical_and(is_decoder).any().item<bool>();
  }

  Routes out;
  out.weights = torch::where(replace.unsqueeze(-1), replacement, w);  // [L,B,E]
  if (r.hard && !uniform_used) {
    const int64_t K = r.indices.size(-1);
    // A replaced route: its expert first, then K-1 distinct other experts (weight 0).
    auto candidates = (pick.unsqueeze(-1) + torch::arange(K, pick.options())).remainder(E);  // [L,B,K]
    out.indices = torch::where(replace.unsqueeze(-1), candidates, r.indices);
    out.hard = true;
  }
  return out;
}

Routes average_routes(int64_t L, int64_t B, int64_t E, torch::TensorOptions opts) {
  TORCH_CHECK(L >= 0 && B >= 0 && E > 0, "average_routes: bad shape L=", L, " B=", B, " E=", E);
  return {torch::full({L, B, E}, 1.0 / static_cast<double>(E), opts), Tensor(), false};
}

torch::Tensor task_random_table(int64_t n_tasks, int64_t L, int64_t E, int64_t n, uint64_t seed) {
  TORCH_CHECK(n_tasks >= 0 && L >= 0 && E > 0, "task_random_table: bad shape n_tasks=", n_tasks, " L=", L,
              " E=", E);
  TORCH_CHECK(n >= 1 && n <= E, "task-level random routing needs 1 <= n <= E (experts = ", E, "), got n = ", n);
  std::mt19937_64 rng(seed);
  auto table = torch::zeros({n_tasks, L, E}, torch::kFloat);  // [n_tasks,L,E]
  auto acc = table.accessor<float, 3>();
  std::vector<int64_t> perm(static_cast<size_t>(E));
  for (int64_t t = 0; t < n_tasks; ++t) {
    for (int64_t l = 0; l < L; ++l) {
      std::iota(perm.begin(), perm.end(), int64_t{0});
      for (int64_t i = 0; i < n; ++i) {
        const auto j = i + static_cast<int64_t>(bounded(rng, static_cast<uint64_t>(E - i)));
        std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
        acc[t][l][perm[static_cast<size_t>(i)]] = 1.0f / static_cast<float>(n);
      }
    }
  }
  return table;
}

Routes routes_from_table(const torch::Tensor& table, const torch::Tensor& task_ids) {
  TORCH_CHECK(table.defined() && table.dim() == 3, "routes_from_table expects a table [n_tasks,L,E], got ",
              table.defined() ? table.sizes() : at::IntArrayRef{});
  TORCH_CHECK(task_ids.dim() == 1 && !task_ids.is_floating_point(),
              "routes_from_table expects integer task ids [B], got ", task_ids.sizes(), " ", task_ids.scalar_type());
  auto ids = task_ids.to(table.device(), torch::kLong);  // [B]
  if (ids.numel() > 0) {
    const auto lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < table.size(0), "task id out of range [0, ", table.size(0), "): ", lo < 0 ? lo : hi);
  }
  Routes r;
  r.weights = table.index_select(0, ids).transpose(0, 1).contiguous().to(task_ids.device());  // [L,B,E]
  r.hard = r.weights.ne(0).sum(-1).eq(1).all().item<bool>();
  if (r.hard) r.indices = r.weights.argmax(-1, /*keepdim=*/true);  // [L,B,1]
  return r;
}

Routes instance_random_routes(int64_t L, int64_t B, int64_t E, std::optional<at::Generator> gen,
                              torch::TensorOptions opts) {
  TORCH_CHECK(L >= 0 && B >= 0 && E > 0, "instance_random_routes: bad shape L=", L, " B=", B, " E=", E);
  auto weights = torch::zeros({L, B, E}, opts);                                        // [L,B,E]
  auto idx = draw_index(E, {L, B}, gen, weights.device()).unsqueeze(-1);              // [L,B,1]
  return {weights.scatter_(-1, idx, 1.0), idx, true};
}

torch::Tensor route_entropy(const torch::Tensor& weights) {
  TORCH_CHECK(weights.dim() == 3, "route_entropy expects weights [L,B,E], got ", weights.sizes());
  return -torch::special::xlogy(weights, weights).sum(-1).mean(1);  // [L]
}

}  // namespace tlmoe::model
