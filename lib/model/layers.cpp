#include "model/layers.h"

namespace tlmoe::model {

torch::nn::Linear make_linear(int64_t in, int64_t out, double init_std) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(true));
  torch::NoGradGuard g;
  l->weight.normal_(0.0, init_std);
  l->bias.zero_();
  return l;
}

namespace {
torch::nn::LayerNorm make_layer_norm(int64_t d, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(eps));
}
}  // namespace

AttentionImpl::AttentionImpl(int64_t d_model, int64_t heads, double dropout, double init_std)
    : heads_(heads), dropout_(dropout) {
  TORCH_CHECK(d_model % heads == 0, "Attention: d_model ", d_model, " is not divisible by heads ", heads);
  k_proj = register_module("k_proj", make_linear(d_model, d_model, init_std));
  v_proj = register_module("v_proj", make_linear(d_model, d_model, init_std));
  q_proj = register_module("q_proj", make_linear(d_model, d_model, init_std));
  out_proj = register_module("out_proj", make_linear(d_model, d_model, init_std));
}

torch::Tensor AttentionImpl::attend(const torch::Tensor& q /*[B,H,T,hd]*/, const torch::Tensor& k /*[B,H,S,hd]*/,
                                    const torch::Tensor& v /*[B,H,S,hd]*/, const torch::Tensor& mask, bool causal) {
  const int64_t B = q.size(0), T = q.size(2), S = k.size(2), D = q.size(1) * q.size(3);
  torch::Tensor attn_mask = mask;
  if (causal) {
    // query t (absolute position S - T + t) sees keys 0 .. S - T + t
    auto tri = torch::ones({T, S}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).tril(S - T);
    attn_mask = attn_mask.defined() ? attn_mask.logical_and(tri) : tri;
  }
  auto o = at::scaled_dot_product_attention(q, k, v, attn_mask, is_training() ? dropout_ : 0.0,
                                            /*is_causal=*/false);          // [B,H,T,hd]
  return out_proj(o.transpose(1, 2).reshape({B, T, D}));                   // [B,T,D]
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& kv, const torch::Tensor& mask,
                                     bool causal) {
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), H = heads_, hd = D / H;
  const torch::Tensor& src = kv.defined() ? kv : x;
  const int64_t S = src.size(1);
  auto q = q_proj(x).view({B, T, H, hd}).transpose(1, 2);    // [B,H,T,hd]
  auto k = k_proj(src).view({B, S, H, hd}).transpose(1, 2);  // [B,H,S,hd]
  auto v = v_proj(src).view({B, S, H, hd}).transpose(1, 2);  // [B,H,S,hd]
  return attend(q, k, v, mask, causal);
}

torch::Tensor AttentionImpl::forward_cached(const torch::Tensor& x, const torch::Tensor& kv, const torch::Tensor& mask,
                                            KVCache& cache) {
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), H = heads_, hd = D / H;
  auto q = q_proj(x).view({B, T, H, hd}).transpose(1, 2);  // [B,H,T,hd]
  if (kv.defined()) {                                       // cross-attention: project the encoder once
    if (!cache.k.defined()) {
      const int64_t S = kv.size(1);
      cache.k = k_proj(kv).view({B, S, H, hd}).transpose(1, 2);  // [B,H,S,hd]
      cache.v = v_proj(kv).view({B, S, H, hd}).transpose(1, 2);
    }
    return attend(q, cache.k, cache.v, mask, false);
  }
  auto k = k_proj(x).view({B, T, H, hd}).transpose(1, 2);  // [B,H,T,hd]
  auto v = v_proj(x).view({B, T, H, hd}).transpose(1, 2);
  cache.k = cache.k.defined() ? torch::cat({cache.k, k}, 2) : k;  // [B,H,t+T,hd]
  cache.v = cache.v.defined() ? torch::cat({cache.v, v}, 2) : v;
  return attend(q, cache.k, cache.v, mask, true);
}

AdapterImpl::AdapterImpl(int64_t d_model, int64_t dim) {
  down = register_module("down", torch::nn::Linear(d_model, dim));
  up = register_module("up", torch::nn::Linear(dim, d_model));
  torch::NoGradGuard g;
  down->weight.normal_(0.0, 1e-2);
  up->weight.normal_(0.0, 1e-2);
  down->bias.zero_();
  up->bias.zero_();
}

torch::Tensor AdapterImpl::forward(const torch::Tensor& x) { return x + up(torch::gelu(down(x))); }

namespace {
std::vector<Adapter> make_adapters(torch::nn::Module& m, const LayerOptions& o, int n) {
  std::vector<Adapter> v;
  if (o.adapter_dim <= 0) return v;
  auto list = m.register_module("adapters", torch::nn::ModuleList());  // adapters.{i}.{down,up}.*
  for (int i = 0; i < n; ++i) {
    v.push_back(Adapter(o.d_model, o.adapter_dim));
    list->push_back(v.back());
  }
  return v;
}
}  // namespace

EncoderLayerImpl::EncoderLayerImpl(const LayerOptions& o) : o_(o) {
  self_attn = register_module("self_attn", Attention(o.d_model, o.heads, o.attention_dropout, o.init_std));
  self_attn_layer_norm = register_module("self_attn_layer_norm", make_layer_norm(o.d_model, o.layer_norm_eps));
  fc1 = register_module("fc1", make_linear(o.d_model, o.ffn_dim, o.init_std));
  fc2 = register_module("fc2", make_linear(o.ffn_dim, o.d_model, o.init_std));
  final_layer_norm = register_module("final_layer_norm", make_layer_norm(o.d_model, o.layer_norm_eps));
  adapters = make_adapters(*this, o, 2);
}

torch::Tensor EncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  const bool tr = is_training();
  const bool ad = !adapters.empty();
  auto h = torch::dropout(self_attn(x, torch::Tensor(), mask, false), o_.dropout, tr);
  if (ad) h = adapters[0](h);
  h = self_attn_layer_norm(x + h);
  auto f = torch::dropout(torch::gelu(fc1(h)), o_.activation_dropout, tr);
  f = torch::dropout(fc2(f), o_.dropout, tr);
  if (ad) f = adapters[1](f);
  return final_layer_norm(h + f);
}

DecoderLayerImpl::DecoderLayerImpl(const LayerOptions& o) : o_(o) {
  self_attn = register_module("self_attn", Attention(o.d_model, o.heads, o.attention_dropout, o.init_std));
  self_attn_layer_norm = register_module("self_attn_layer_norm", make_layer_norm(o.d_model, o.layer_norm_eps));
  encoder_attn = register_module("encoder_attn", Attention(o.d_model, o.heads, o.attention_dropout, o.init_std));
  encoder_attn_layer_norm =
      register_module("encoder_attn_layer_norm", make_layer_norm(o.d_model, o.layer_norm_eps));
  fc1 = register_module("fc1", make_linear(o.d_model, o.ffn_dim, o.init_std));
  fc2 = register_module("fc2", make_linear(o.ffn_dim, o.d_model, o.init_std));
  final_layer_norm = register_module("final_layer_norm", make_layer_norm(o.d_model, o.layer_norm_eps));
  adapters = make_adapters(*this, o, 3);
}

torch::Tensor DecoderLayerImpl::sublayers(const torch::Tensor& x, const torch::Tensor& self_out,
                                         const std::function<torch::Tensor(const torch::Tensor&)>& cross) {
  const bool tr = is_training();
  const bool ad = !adapters.empty();
  auto h = torch::dropout(self_out, o_.dropout, tr);
  if (ad) h = adapters[0](h);
  h = self_attn_layer_norm(x + h);
  auto c = torch::dropout(cross(h), o_.dropout, tr);
  if (ad) c = adapters[1](c);
  h = encoder_attn_layer_norm(h + c);
  auto f = torch::dropout(torch::gelu(fc1(h)), o_.activation_dropout, tr);
  f = torch::dropout(fc2(f), o_.dropout, tr);
  if (ad) f = adapters[2](f);
  return final_layer_norm(h + f);
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& enc,
                                        const torch::Tensor& enc_mask) {
  return sublayers(x, self_attn(x, torch::Tensor(), torch::Tensor(), true),
                   [&](const torch::Tensor& h) { return encoder_attn(h, enc, enc_mask, false); });
}

torch::Tensor DecoderLayerImpl::forward_cached(const torch::Tensor& x, const torch::Tensor& enc,
                                               const torch::Tensor& enc_mask, DecoderLayerCache& cache) {
  return sublayers(x, self_attn->forward_cached(x, torch::Tensor(), torch::Tensor(), cache.self_attn),
                   [&](const torch::Tensor& h) { return encoder_attn->forward_cached(h, enc, enc_mask, cache.cross_attn); });
}

}  // namespace tlmoe::model
