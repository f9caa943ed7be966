// The BART-style encoder-decoder with task-level expert layers (docs/method.md §1).
//
// Parameter names follow Hugging Face BART so a facebook/bart-base state dict maps one to one:
//   model.shared.weight                                   [V,D] (tied LM head)
//   model.{encoder,decoder}.embed_positions.weight        [max_positions+2, D]
//   model.{encoder,decoder}.layernorm_embedding.{weight,bias}
//   model.encoder.layers.{i}.<BART layer params>          a vanilla (shared) layer
//   model.encoder.layers.{i}.experts.{e}.<BART layer params>   expert e of a routed layer
//   final_logits_bias                                     [1,V] buffer
// With model.experts == 1 every layer is vanilla and the layout is exactly HF's.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "model/layers.h"

namespace tlmoe::model {

struct ModelOptions {
  int64_t vocab_size = 50265;
  int64_t pad_id = 1;
  LayerOptions layer;
  int64_t encoder_layers = 6;
  int64_t decoder_layers = 6;
  int64_t experts = 3;
  std::vector<int64_t> vanilla_encoder_layers;
  std::vector<int64_t> vanilla_decoder_layers;
  int64_t max_positions = 1024;
  bool scale_embedding = false;
};

// The route of one layer for one batch.
//   weights [B,E]: mixing weights (differentiable towards the router);
//   indices [B,K]: the experts each example uses when routes are hard (else undefined);
//   sparse: run only the selected experts (gather / per-expert slice / weighted combine).
struct LayerRoute {
  torch::Tensor weights;
  torch::Tensor indices;
  bool sparse = false;
};

// The decoder's keys/values across generation steps: per decoder layer, one DecoderLayerCache per
// expert (a vanilla layer has one). Rows follow the batch; reorder() follows beam search.
struct DecoderCache {
  std::vector<std::vector<DecoderLayerCache>> layers;  // [decoder layer][expert]
  int64_t past_len = 0;                                // positions decoded so far
  // >= 0: every step after the first embeds its token at this position instead of past_len (the
  // reference's sparse decoding reads the past length off the cache's head dimension;
  // reference_compat reproduces it, docs/method.md §13.2)
  int64_t frozen_position = -1;
  // Row i of the new batch continues row idx[i] of the old one (idx [B] int64). Cross-attention
  // caches are reordered only when `cross` (beam search keeps rows within one example, whose
  // encoder states are identical).
  void reorder(const torch::Tensor& idx, bool cross = false);
};

// A routed encoder layer: m complete encoder layers and the dense or sparse dispatch.
class RoutedEncoderLayerImpl : public torch::nn::Module {
 public:
  RoutedEncoderLayerImpl(const LayerOptions& o, int64_t experts);
  torch::Tensor forward(const torch::Tensor& x /*[B,S,D]*/, const torch::Tensor& mask /*[B,1,1,S]*/,
                        const LayerRoute& route);
  std::vector<EncoderLayer> experts;

 private:
  torch::nn::ModuleList list_{nullptr};
};
TORCH_MODULE(RoutedEncoderLayer);

class RoutedDecoderLayerImpl : public torch::nn::Module {
 public:
  RoutedDecoderLayerImpl(const LayerOptions& o, int64_t experts);
  torch::Tensor forward(const torch::Tensor& x /*[B,T,D]*/, const torch::Tensor& enc /*[B,S,D]*/,
                        const torch::Tensor& enc_mask /*[B,1,1,S]*/, const LayerRoute& route);
  // Generation step with caches (one per expert). Sparse routes must be the same for every row
  // of the batch (generate() groups rows by route): only the selected experts run and only
  // their caches are filled. Dense routes run every expert.
  torch::Tensor forward_cached(const torch::Tensor& x, const torch::Tensor& enc, const torch::Tensor& enc_mask,
                               const LayerRoute& route, std::vector<DecoderLayerCache>& caches);
  std::vector<DecoderLayer> experts;

 private:
  torch::nn::ModuleList list_{nullptr};
};
TORCH_MODULE(RoutedDecoderLayer);

// One stack (encoder or decoder): embeddings, layernorm_embedding, layers.
class StackImpl : public torch::nn::Module {
 public:
  StackImpl(const ModelOptions& o, bool decoder);
  torch::nn::Embedding embed_positions{nullptr};
  torch::nn::LayerNorm layernorm_embedding{nullptr};
  // Exactly one of plain[i] / routed[i] is non-null.
  std::vector<EncoderLayer> enc_plain;
  std::vector<RoutedEncoderLayer> enc_routed;
  std::vector<DecoderLayer> dec_plain;
  std::vector<RoutedDecoderLayer> dec_routed;
  bool is_routed(int64_t i) const;
  int64_t num_layers() const { return n_; }

 private:
  torch::nn::ModuleList layers_{nullptr};
  int64_t n_;
  bool decoder_;
};
TORCH_MODULE(Stack);

class BartModelImpl : public torch::nn::Module {
 public:
  explicit BartModelImpl(const ModelOptions& o);
  torch::nn::Embedding shared{nullptr};
  Stack encoder{nullptr}, decoder{nullptr};
};
TORCH_MODULE(BartModel);

// The seq2seq model without routing decisions: it consumes one LayerRoute per layer
// (encoder layers first, then decoder layers; entries of vanilla layers are ignored).
class Seq2SeqImpl : public torch::nn::Module {
 public:
  explicit Seq2SeqImpl(const ModelOptions& o);

  // input_ids [B,S] int64, input_mask [B,S] (1 = token), decoder_input_ids [B,T] -> logits [B,T,V]
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& input_mask,
                        const torch::Tensor& decoder_input_ids, const std::vector<LayerRoute>& routes);
  // The two halves, for generation and representations.
  torch::Tensor encode(const torch::Tensor& input_ids, const torch::Tensor& input_mask,
                       const std::vector<LayerRoute>& routes);                            // [B,S,D]
  torch::Tensor decode(const torch::Tensor& decoder_input_ids, const torch::Tensor& enc,
                       const torch::Tensor& input_mask, const std::vector<LayerRoute>& routes,
                       int64_t past_len = 0);                                           // [B,T,D]
  // decode() on the new positions only, continuing `cache` (created on first use).
  torch::Tensor decode_cached(const torch::Tensor& decoder_input_ids /*[B,T]*/, const torch::Tensor& enc,
                              const torch::Tensor& input_mask, const std::vector<LayerRoute>& routes,
                              DecoderCache& cache);                                       // [B,T,D]
  torch::Tensor lm_logits(const torch::Tensor& hidden /*[B,T,D]*/);                       // [B,T,V]

  // docs/method.md §1.8: sum over routed layers of the mean over expert pairs of sum_params ||p_a - p_b||_2.
  torch::Tensor expert_difference();

  // docs/method.md §1.6: copy a dense (m = 1, HF-named) state into this model; each expert of a routed
  // layer gets the dense layer plus N(0, noise_std) noise; vanilla layers and embeddings are
  // copied exactly. Throws naming the first missing or mis-shaped tensor.
  void init_from_dense(const std::map<std::string, torch::Tensor>& dense, double noise_std,
                       torch::Generator* gen = nullptr);

  const ModelOptions& options() const { return o_; }
  int64_t routed_layers() const;  // layers that hold experts (for counting)

  BartModel model{nullptr};
  torch::Tensor final_logits_bias;

 private:
  torch::Tensor embed(const torch::Tensor& ids, Stack& stack, int64_t past_len);
  ModelOptions o_;
};
TORCH_MODULE(Seq2Seq);

}  // namespace tlmoe::model
