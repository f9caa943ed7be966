// BART building blocks (docs/method.md §1.1): multi-head attention and post-LayerNorm encoder/decoder
// layers with exactly Hugging Face BART's parameter names, so that a facebook/bart-base state
// dict maps onto them one to one:
//   self_attn.{q,k,v,out}_proj.{weight,bias}  self_attn_layer_norm.{weight,bias}
//   encoder_attn.{q,k,v,out}_proj.*           encoder_attn_layer_norm.*      (decoder only)
//   fc1.*  fc2.*  final_layer_norm.*
#pragma once

#include <torch/torch.h>

#include <functional>

namespace tlmoe::model {

struct LayerOptions {
  int64_t d_model = 768;
  int64_t heads = 12;
  int64_t ffn_dim = 3072;
  double dropout = 0.1;
  double attention_dropout = 0.1;
  double activation_dropout = 0.1;
  double layer_norm_eps = 1e-5;
  double init_std = 0.02;
  int64_t adapter_dim = 0;  // > 0: bottleneck adapters (Fisher task representations, docs/method.md §5)
};

// Bottleneck adapter x + up(gelu(down(x))) (docs/method.md §5, Fisher recipe): down [a,D], up [D,a].
// tlmoe initialises both N(0, 1e-2) (the reference's all-ones init is a bug, docs/method.md §13.15).
class AdapterImpl : public torch::nn::Module {
 public:
  AdapterImpl(int64_t d_model, int64_t dim);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear down{nullptr}, up{nullptr};
};
TORCH_MODULE(Adapter);

// Masks shared by every layer of one forward pass.
struct AttentionMasks {
  torch::Tensor encoder;  // [B,1,1,S] bool, true = attend (source padding)
  bool decoder_causal = true;
};

// Keys and values of one attention module kept across decoding steps (generation).
//   self-attention: the keys/values of every position decoded so far, grown each step;
//   cross-attention: the projected encoder states, computed once.
struct KVCache {
  torch::Tensor k, v;  // [B,H,t,hd]
};

// The caches of one decoder layer (one expert of a routed layer).
struct DecoderLayerCache {
  KVCache self_attn, cross_attn;
};

// Multi-head attention, BART layout: q is scaled by head_dim^-0.5 (inside SDPA), dropout on
// the attention probabilities, separate q/k/v/out projections with biases.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t d_model, int64_t heads, double dropout, double init_std);
  // x [B,T,D]; kv [B,S,D] (undefined = self-attention on x); mask [B,1,T|1,S] bool or undefined.
  // Returns [B,T,D].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& kv, const torch::Tensor& mask,
                        bool causal);
  // Incremental form for generation. Self-attention (kv undefined): x holds the new positions,
  // their keys/values are appended to `cache` and the causal mask covers past + new. Cross-
  // attention (kv = encoder states): keys/values are projected on the first call and reused.
  torch::Tensor forward_cached(const torch::Tensor& x, const torch::Tensor& kv, const torch::Tensor& mask,
                               KVCache& cache);

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

 private:
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const torch::Tensor& mask, bool causal);
  int64_t heads_;
  double dropout_;
};
TORCH_MODULE(Attention);

// Post-LN encoder layer: x = LN(x + drop(SelfAttn(x))); x = LN(x + drop(fc2(drop_act(gelu(fc1(x)))))).
class EncoderLayerImpl : public torch::nn::Module {
 public:
  explicit EncoderLayerImpl(const LayerOptions& o);
  torch::Tensor forward(const torch::Tensor& x /*[B,S,D]*/, const torch::Tensor& mask /*[B,1,1,S]*/);

  Attention self_attn{nullptr};
  torch::nn::LayerNorm self_attn_layer_norm{nullptr}, final_layer_norm{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  std::vector<Adapter> adapters;  // adapter_dim > 0: after self-attention and after the FFN

 private:
  LayerOptions o_;
};
TORCH_MODULE(EncoderLayer);

// Post-LN decoder layer: causal self-attention, cross-attention over the encoder states, FFN.
class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const LayerOptions& o);
  torch::Tensor forward(const torch::Tensor& x /*[B,T,D]*/, const torch::Tensor& enc /*[B,S,D]*/,
                        const torch::Tensor& enc_mask /*[B,1,1,S]*/);
  // The same layer on new positions only, with the keys/values of earlier positions in `cache`.
  torch::Tensor forward_cached(const torch::Tensor& x /*[B,T,D]*/, const torch::Tensor& enc /*[B,S,D]*/,
                               const torch::Tensor& enc_mask /*[B,1,1,S]*/, DecoderLayerCache& cache);

  Attention self_attn{nullptr}, encoder_attn{nullptr};
  torch::nn::LayerNorm self_attn_layer_norm{nullptr}, encoder_attn_layer_norm{nullptr},
      final_layer_norm{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  std::vector<Adapter> adapters;  // adapter_dim > 0: after self-, cross-attention and the FFN

 private:
  // self-attention output -> residual + LN -> cross-attention (given) -> residual + LN -> FFN
  torch::Tensor sublayers(const torch::Tensor& x, const torch::Tensor& self_out,
                          const std::function<torch::Tensor(const torch::Tensor&)>& cross);
  LayerOptions o_;
};
TORCH_MODULE(DecoderLayer);

// HF BART initialisation of a Linear: weight ~ N(0, std), bias = 0.
torch::nn::Linear make_linear(int64_t in, int64_t out, double init_std);

}  // namespace tlmoe::model
