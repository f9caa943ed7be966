#include "model/seq2seq.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "kernels/dispatch.h"

namespace tlmoe::model {

namespace {

bool contains(const std::vector<int64_t>& v, int64_t x) { return std::find(v.begin(), v.end(), x) != v.end(); }

torch::nn::Embedding make_embedding(int64_t n, int64_t d, double std, int64_t padding_idx) {
  auto opts = torch::nn::EmbeddingOptions(n, d);
  if (padding_idx >= 0) opts.padding_idx(padding_idx);
  torch::nn::Embedding e(opts);
  torch::NoGradGuard g;
  e->weight.normal_(0.0, std);
  if (padding_idx >= 0) e->weight[padding_idx].zero_();
  return e;
}

// Expert-contiguous execution of one routed layer (whole sequences move, not tokens).
//   plan = histogram + scan of route.indices; xs = gather(x); ys = concat_e expert_e(xs[slice_e]);
//   y[b] = sum_k w[b, idx[b,k]] * ys[slot(b,k)]
// When every example goes to one expert (top-1, a single-task batch) nothing moves:
//   y = expert_e(x) * w.
template <class RunExpert>
torch::Tensor run_sparse(const torch::Tensor& x, const LayerRoute& route, int64_t num_experts,
                         const std::vector<torch::Tensor>& side, RunExpert&& run) {
  TORCH_CHECK(route.indices.defined(), "sparse execution needs hard routes (indices)");
  auto plan = kernels::make_plan(route.indices, num_experts);
  auto wk = route.weights.gather(1, route.indices);  // [B,K]
  wk = wk.to(x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat);
  const auto& o = plan.host_offsets;
  if (plan.single_expert()) {
    int64_t e = 0;
    while (o[e + 1] == o[e]) ++e;
    auto y = run(e, x, side);
    std::vector<int64_t> wshape(y.dim(), 1);
    wshape[0] = y.size(0);
    return y * wk.view(wshape).to(y.scalar_type());
  }
  auto xs = kernels::gather_rows(x, plan);  // [B*K, ...]
  std::vector<torch::Tensor> side_s;
  for (const auto& t : side) side_s.push_back(t.defined() ? kernels::gather_rows(t, plan) : t);
  std::vector<torch::Tensor> outs;
  for (int64_t e = 0; e < num_experts; ++e) {
    if (o[e + 1] == o[e]) continue;  // empty expert: no work at all
    std::vector<torch::Tensor> sl;
    for (const auto& t : side_s) sl.push_back(t.defined() ? t.slice(0, o[e], o[e + 1]) : t);
    outs.push_back(run(e, xs.slice(0, o[e], o[e + 1]), sl));
  }
  auto ys = outs.size() == 1 ? outs[0] : torch::cat(outs, 0);  // [B*K, ...] expert-contiguous
  return kernels::combine_rows(ys, wk, plan);
}

// Dense execution: every expert on the whole batch, mixed by the weights (the paper's path).
template <class RunExpert>
torch::Tensor run_dense(const torch::Tensor& x, const LayerRoute& route, int64_t num_experts, RunExpert&& run) {
  TORCH_CHECK(route.weights.defined() && route.weights.size(1) == num_experts, "routed layer needs weights [B,",
              num_experts, "]");
  torch::Tensor y;
  for (int64_t e = 0; e < num_experts; ++e) {
    auto w = route.weights.select(1, e).to(x.scalar_type()).view({-1, 1, 1});  // [B,1,1]
    auto out = run(e) * w;
    y = y.defined() ? y + out : out;
  }
  return y;
}

}  // namespace

// ---- routed layers ------------------------------------------------------------------------------

RoutedEncoderLayerImpl::RoutedEncoderLayerImpl(const LayerOptions& o, int64_t n) {
  list_ = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < n; ++e) {
    experts.emplace_back(o);
    list_->push_back(experts.back());
  }
}

torch::Tensor RoutedEncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask,
                                              const LayerRoute& route) {
  const int64_t E = static_cast<int64_t>(experts.size());
  if (route.sparse)
    return run_sparse(x, route, E, {mask}, [&](int64_t e, const torch::Tensor& xs, const std::vector<torch::Tensor>& s) {
      return experts[e]->forward(xs, s[0]);
    });
  return run_dense(x, route, E, [&](int64_t e) { return experts[e]->forward(x, mask); });
}

RoutedDecoderLayerImpl::RoutedDecoderLayerImpl(const LayerOptions& o, int64_t n) {
  list_ = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < n; ++e) {
    experts.emplace_back(o);
    list_->push_back(experts.back());
  }
}

torch::Tensor RoutedDecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& enc,
                                              const torch::Tensor& enc_mask, const LayerRoute& route) {
  const int64_t E = static_cast<int64_t>(experts.size());
  if (route.sparse)
    return run_sparse(x, route, E, {enc, enc_mask},
                      [&](int64_t e, const torch::Tensor& xs, const std::vector<torch::Tensor>& s) {
                        return experts[e]->forward(xs, s[0], s[1]);
                      });
  return run_dense(x, route, E, [&](int64_t e) { return experts[e]->forward(x, enc, enc_mask); });
}

torch::Tensor RoutedDecoderLayerImpl::forward_cached(const torch::Tensor& x, const torch::Tensor& enc,
                                                     const torch::Tensor& enc_mask, const LayerRoute& route,
                                                     std::vector<DecoderLayerCache>& caches) {
  const int64_t E = static_cast<int64_t>(experts.size());
  caches.resize(E);
  if (route.sparse) {
    TORCH_CHECK(route.indices.defined(), "sparse execution needs hard routes (indices)");
    auto idx = route.indices.cpu();                                     // [B,K]
    TORCH_CHECK(idx.eq(idx[0].unsqueeze(0)).all().item<bool>(),
                "cached sparse decoding needs one route for the whole batch (group rows by route)");
    auto wk = route.weights.gather(1, route.indices).to(x.scalar_type());  // [B,K]
    torch::Tensor y;
    for (int64_t k = 0; k < idx.size(1); ++k) {
      const int64_t e = idx[0][k].item<int64_t>();
      auto out = experts[e]->forward_cached(x, enc, enc_mask, caches[e]) * wk.select(1, k).view({-1, 1, 1});
      y = y.defined() ? y + out : out;
    }
    return y;
  }
  return run_dense(x, route, E, [&](int64_t e) { return experts[e]->forward_cached(x, enc, enc_mask, caches[e]); });
}

void DecoderCache::reorder(const torch::Tensor& idx, bool cross) {
  auto sel = [&](KVCache& c) {
    if (!c.k.defined()) return;
    auto i = idx.to(c.k.device());
    c.k = c.k.index_select(0, i);
    c.v = c.v.index_select(0, i);
  };
  for (auto& layer : layers)
    for (auto& c : layer) {
      sel(c.self_attn);
      if (cross) sel(c.cross_attn);
    }
}

// ---- stacks -----------------------------------------------------------------------------------

StackImpl::StackImpl(const ModelOptions& o, bool decoder) : decoder_(decoder) {
  n_ = decoder ? o.decoder_layers : o.encoder_layers;
  const auto& vanilla = decoder ? o.vanilla_decoder_layers : o.vanilla_encoder_layers;  // docs/method.md §13.1
  // BART's learned positions have an offset of 2: the table has max_positions + 2 rows.
  embed_positions = register_module("embed_positions", make_embedding(o.max_positions + 2, o.layer.d_model,
                                                                      o.layer.init_std, -1));
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < n_; ++i) {
    const bool routed = o.experts > 1 && !contains(vanilla, i);
    if (decoder) {
      dec_plain.push_back(routed ? DecoderLayer(nullptr) : DecoderLayer(o.layer));
      dec_routed.push_back(routed ? RoutedDecoderLayer(o.layer, o.experts) : RoutedDecoderLayer(nullptr));
      if (routed) layers_->push_back(dec_routed.back());
      else layers_->push_back(dec_plain.back());
    } else {
      enc_plain.push_back(routed ? EncoderLayer(nullptr) : EncoderLayer(o.layer));
      enc_routed.push_back(routed ? RoutedEncoderLayer(o.layer, o.experts) : RoutedEncoderLayer(nullptr));
      if (routed) layers_->push_back(enc_routed.back());
      else layers_->push_back(enc_plain.back());
    }
  }
  layernorm_embedding = register_module(
      "layernorm_embedding", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.layer.d_model}).eps(o.layer.layer_norm_eps)));
}

bool StackImpl::is_routed(int64_t i) const {
  return decoder_ ? !dec_routed[i].is_empty() : !enc_routed[i].is_empty();
}

BartModelImpl::BartModelImpl(const ModelOptions& o) {
  shared = register_module("shared", make_embedding(o.vocab_size, o.layer.d_model, o.layer.init_std, o.pad_id));
  encoder = register_module("encoder", Stack(o, false));
  decoder = register_module("decoder", Stack(o, true));
}

// ---- the model ------------------------------------------------------------------------------

Seq2SeqImpl::Seq2SeqImpl(const ModelOptions& o) : o_(o) {
  TORCH_CHECK(o.experts >= 1, "model.experts must be >= 1");
  model = register_module("model", BartModel(o));
  final_logits_bias = register_buffer("final_logits_bias", torch::zeros({1, o.vocab_size}));
}

int64_t Seq2SeqImpl::routed_layers() const {
  int64_t n = 0;
  for (int64_t i = 0; i < o_.encoder_layers; ++i) n += model->encoder->is_routed(i);
  for (int64_t i = 0; i < o_.decoder_layers; ++i) n += model->decoder->is_routed(i);
  return n;
}

torch::Tensor Seq2SeqImpl::embed(const torch::Tensor& ids, Stack& stack, int64_t past_len) {
  const int64_t T = ids.size(1);
  TORCH_CHECK(past_len + T <= o_.max_positions, "sequence of ", past_len + T, " positions exceeds model.max_positions (",
              o_.max_positions, ")");
  auto x = model->shared(ids);                                                           // [B,T,D]
  if (o_.scale_embedding) x = x * std::sqrt(static_cast<double>(o_.layer.d_model));
  auto pos = torch::arange(past_len + 2, past_len + T + 2, ids.options().dtype(torch::kLong));
  x = x + stack->embed_positions(pos).unsqueeze(0);                                      // [B,T,D]
  x = stack->layernorm_embedding(x);
  return torch::dropout(x, o_.layer.dropout, is_training());
}

torch::Tensor Seq2SeqImpl::encode(const torch::Tensor& input_ids, const torch::Tensor& input_mask,
                                  const std::vector<LayerRoute>& routes) {
  auto& enc = model->encoder;
  auto mask = input_mask.to(torch::kBool).view({input_mask.size(0), 1, 1, input_mask.size(1)});  // [B,1,1,S]
  auto h = embed(input_ids, enc, 0);
  for (int64_t i = 0; i < o_.encoder_layers; ++i) {
    if (enc->is_routed(i)) {
      TORCH_CHECK(static_cast<int64_t>(routes.size()) > i, "encoder layer ", i, " is routed but no route was given");
      h = enc->enc_routed[i]->forward(h, mask, routes[i]);
    } else {
      h = enc->enc_plain[i]->forward(h, mask);
    }
  }
  return h;
}

torch::Tensor Seq2SeqImpl::decode(const torch::Tensor& decoder_input_ids, const torch::Tensor& enc_states,
                                  const torch::Tensor& input_mask, const std::vector<LayerRoute>& routes,
                                  int64_t past_len) {
  auto& dec = model->decoder;
  auto mask = input_mask.to(torch::kBool).view({input_mask.size(0), 1, 1, input_mask.size(1)});  // [B,1,1,S]
  auto h = embed(decoder_input_ids, dec, past_len);
  for (int64_t i = 0; i < o_.decoder_layers; ++i) {
    if (dec->is_routed(i)) {
      const int64_t r = o_.encoder_layers + i;
      TORCH_CHECK(static_cast<int64_t>(routes.size()) > r, "decoder layer ", i, " is routed but no route was given");
      h = dec->dec_routed[i]->forward(h, enc_states, mask, routes[r]);
    } else {
      h = dec->dec_plain[i]->forward(h, enc_states, mask);
    }
  }
  return h;
}

torch::Tensor Seq2SeqImpl::decode_cached(const torch::Tensor& decoder_input_ids, const torch::Tensor& enc_states,
                                         const torch::Tensor& input_mask, const std::vector<LayerRoute>& routes,
                                         DecoderCache& cache) {
  auto& dec = model->decoder;
  if (cache.layers.empty()) cache.layers.resize(o_.decoder_layers);
  auto mask = input_mask.to(torch::kBool).view({input_mask.size(0), 1, 1, input_mask.size(1)});  // [B,1,1,S]
  const int64_t position = cache.frozen_position >= 0 && cache.past_len > 0 ? cache.frozen_position : cache.past_len;
  auto h = embed(decoder_input_ids, dec, position);
  for (int64_t i = 0; i < o_.decoder_layers; ++i) {
    auto& caches = cache.layers[i];
    if (dec->is_routed(i)) {
      const int64_t r = o_.encoder_layers + i;
      TORCH_CHECK(static_cast<int64_t>(routes.size()) > r, "decoder layer ", i, " is routed but no route was given");
      h = dec->dec_routed[i]->forward_cached(h, enc_states, mask, routes[r], caches);
    } else {
      caches.resize(1);
      h = dec->dec_plain[i]->forward_cached(h, enc_states, mask, caches[0]);
    }
  }
  cache.past_len += decoder_input_ids.size(1);
  return h;
}

torch::Tensor Seq2SeqImpl::lm_logits(const torch::Tensor& hidden) {
  return torch::matmul(hidden, model->shared->weight.t()) + final_logits_bias;  // [B,T,V]
}

torch::Tensor Seq2SeqImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& input_mask,
                                   const torch::Tensor& decoder_input_ids, const std::vector<LayerRoute>& routes) {
  auto enc = encode(input_ids, input_mask, routes);
  return lm_logits(decode(decoder_input_ids, enc, input_mask, routes));
}

torch::Tensor Seq2SeqImpl::expert_difference() {
  torch::Tensor total = torch::zeros({}, final_logits_bias.options());
  auto layer_term = [&](const std::vector<std::vector<torch::Tensor>>& per_expert) {
    const size_t E = per_expert.size();
    torch::Tensor s = torch::zeros({}, total.options());
    int64_t pairs = 0;
    for (size_t a = 0; a < E; ++a)
      for (size_t b = a + 1; b < E; ++b, ++pairs)
        for (size_t p = 0; p < per_expert[a].size(); ++p) s = s + (per_expert[a][p] - per_expert[b][p]).norm();
    return pairs ? s / static_cast<double>(pairs) : s;
  };
  for (int64_t i = 0; i < o_.encoder_layers; ++i)
    if (model->encoder->is_routed(i)) {
      std::vector<std::vector<torch::Tensor>> pe;
      for (auto& ex : model->encoder->enc_routed[i]->experts) pe.push_back(ex->parameters());
      total = total + layer_term(pe);
    }
  for (int64_t i = 0; i < o_.decoder_layers; ++i)
    if (model->decoder->is_routed(i)) {
      std::vector<std::vector<torch::Tensor>> pe;
      for (auto& ex : model->decoder->dec_routed[i]->experts) pe.push_back(ex->parameters());
      total = total + layer_term(pe);
    }
  return total;
}

void Seq2SeqImpl::init_from_dense(const std::map<std::string, torch::Tensor>& dense, double noise_std,
                                  torch::Generator* gen) {
  torch::NoGradGuard g;
  auto params = named_parameters(true);
  auto buffers = named_buffers(true);
  auto fetch = [&](const std::string& name, const torch::Tensor& like) -> torch::Tensor {
    auto it = dense.find(name);
    if (it == dense.end()) throw InputError("initialisation: dense checkpoint has no tensor '" + name + "'");
    if (it->second.sizes() != like.sizes()) {
      std::ostringstream s;
      s << "initialisation: tensor '" << name << "' has shape " << it->second.sizes() << " but the model needs "
        << like.sizes();
      throw InputError(s.str());
    }
    return it->second.to(like.device(), like.scalar_type());
  };
  // Only the backbone: a subclass's routing state (task table, router) is not in a dense model.
  auto backbone = [](const std::string& n) { return n.rfind("model.", 0) == 0 || n == "final_logits_bias"; };
  for (auto& item : params) {
    const std::string& name = item.key();
    if (!backbone(name)) continue;
    torch::Tensor& p = item.value();
    // model.encoder.layers.3.experts.1.fc1.weight  ->  model.encoder.layers.3.fc1.weight
    std::string dense_name = name;
    auto pos = name.find(".experts.");
    bool expert = pos != std::string::npos;
    if (expert) {
      auto after = name.find('.', pos + 9);
      dense_name = name.substr(0, pos) + name.substr(after);
    }
    auto src = fetch(dense_name, p);
    p.copy_(src);
    if (expert && noise_std > 0) {
      auto noise = gen ? torch::randn(p.sizes(), *gen, p.options()) : torch::randn(p.sizes(), p.options());
      p.add_(noise * noise_std);
    }
  }
  for (auto& item : buffers)
    if (backbone(item.key())) item.value().copy_(fetch(item.key(), item.value()));
}

}  // namespace tlmoe::model
