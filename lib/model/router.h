// Routers (docs/method.md §2): a network from one task vector z [B, d_in] to route logits [L, B, E],
// one row per routed layer (encoder layers first, then decoder layers).
//
// Ownership: routers are held as std::shared_ptr<RouterImpl> (the base is abstract, so there is
// no TORCH_MODULE(Router) holder); each concrete router also has its holder (MlpRouter, ...).
// Register one in a parent module with register_module("router", make_router(options)).
//
// The ten router types of the reference (CrossTaskMoE modules/router_v2.py, RouterWrapper), under
// its names, with its parameter names (the reference prefixes them with "router.model."), so a
// reference checkpoint maps onto tlmoe by a prefix rewrite (H = hidden, D = d_in, L layers, E experts):
//   linear                      linear1 [H,D], linear2 [L·E,H]: one MLP for all layers
//   linear_layer_specific       router_units.{l}.linear1 [H,D], .linear2 [E,H]: one MLP per layer
//   rnn, gru, lstm              pos_embed [L,D]; rnn.* (bidirectional, input D, hidden H);
//                               proj [E,2H]: the task vector plus a layer-position embedding,
//                               read as a length-L sequence
//   transformer                 pos_embed [L,D]; transformer.* (one encoder layer of width D);
//                               proj [E,D]
//   rnn_layer_specific,         layer_specific_proj [L·H,D]: the task vector projected to one
//   gru_layer_specific,           H-vector per layer, then rnn.* (bidirectional, input H, hidden
//   lstm_layer_specific           H) and proj [E,2H]
//   transformer_layer_specific  layer_specific_proj [L·H,D]; transformer.* (width H); proj [E,H]
// (biases beside every weight; rnn.{weight_ih,weight_hh,bias_ih,bias_hh}_l0[_reverse] as LibTorch
// and PyTorch name them; transformer.self_attn.{in_proj_weight,in_proj_bias,out_proj.*},
// transformer.linear1/linear2/norm1/norm2.*). The transformer layers have
// `transformer_heads` heads (4) and a feed-forward width of `transformer_ffn` (64), dropout 0.1,
// ReLU, post-LN, sequence-first: the reference's nn.TransformerEncoderLayer(d, nhead=4,
// dim_feedforward=64).
// tlmoe's earlier names stay accepted: mlp = linear, layer_mlp = linear_layer_specific. Before the
// reference's names, tlmoe's gru, lstm and transformer were the *_layer_specific types: a
// checkpoint of that time is recognised by its layer_specific_proj (legacy_router_kind).
//
// Initialisation (docs/method.md §2, the reference's HF init_weights): every torch::nn::Linear weight
// and the position embedding ~ N(0, init_std), zero biases; RNN/GRU/LSTM parameters keep LibTorch's
// defaults; the attention's packed in_proj keeps MultiheadAttention's default (xavier-uniform weight,
// zero bias) because it is not a Linear in the reference either; LayerNorms are ones/zeros.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tlmoe::model {

struct RouterOptions {
  std::string kind = "linear_layer_specific";  // a name in router_kinds() or an alias
  int64_t d_in = 768;              // task-vector dimension
  int64_t hidden = 64;             // H
  int64_t layers = 12;             // L = encoder layers + decoder layers
  int64_t experts = 3;             // E
  double init_std = 0.02;          // std of every Linear weight
  int64_t transformer_heads = 4;   // the transformer routers' attention heads
  int64_t transformer_ffn = 64;    // ... and feed-forward width
};

// Base class of every router. forward(z [B, d_in]) -> logits [L, B, E].
class RouterImpl : public torch::nn::Module {
 public:
  explicit RouterImpl(const RouterOptions& o);
  virtual torch::Tensor forward(const torch::Tensor& z) = 0;
  const RouterOptions& options() const { return options_; }

 protected:
  // Checks z is [B, d_in] (value-rich message on failure).
  void check_input(const torch::Tensor& z) const;
  RouterOptions options_;
};

// mlp: one shared MLP d_in -> H -> GELU -> L·E, viewed [B,L,E], transposed to [L,B,E].
class MlpRouterImpl : public RouterImpl {
 public:
  explicit MlpRouterImpl(const RouterOptions& o);
  torch::Tensor forward(const torch::Tensor& z) override;
  torch::nn::Linear linear1{nullptr}, linear2{nullptr};
};
TORCH_MODULE(MlpRouter);

// One layer's unit of layer_mlp: d_in -> H -> GELU -> E.
class RouterUnitImpl : public torch::nn::Module {
 public:
  explicit RouterUnitImpl(const RouterOptions& o);
  torch::Tensor forward(const torch::Tensor& z /*[B,d_in]*/);  // -> [B,E]
  torch::nn::Linear linear1{nullptr}, linear2{nullptr};
};
TORCH_MODULE(RouterUnit);

// layer_mlp: L independent RouterUnits, stacked to [L,B,E].
class LayerMlpRouterImpl : public RouterImpl {
 public:
  explicit LayerMlpRouterImpl(const RouterOptions& o);
  torch::Tensor forward(const torch::Tensor& z) override;
  torch::nn::ModuleList router_units{nullptr};  // L x RouterUnit
};
TORCH_MODULE(LayerMlpRouter);

// rnn, gru, lstm (shared: the task vector plus pos_embed at each of the L positions) and their
// *_layer_specific forms (layer_specific_proj: one H-vector per layer): a 1-layer bidirectional
// recurrent network over the L positions (H per direction), Linear(2H -> E), [L,B,E].
enum class RecurrentCell { kRnn, kGru, kLstm };
class RecurrentRouterImpl : public RouterImpl {
 public:
  RecurrentRouterImpl(const RouterOptions& o, RecurrentCell cell, bool layer_specific);
  torch::Tensor forward(const torch::Tensor& z) override;
  torch::nn::Linear layer_specific_proj{nullptr}, proj{nullptr};  // layer_specific_proj: layer-specific only
  torch::nn::Embedding pos_embed{nullptr};                        // shared only
  torch::nn::RNN rnn_tanh{nullptr};  // the one cell in use is registered as "rnn"
  torch::nn::GRU gru{nullptr};
  torch::nn::LSTM lstm{nullptr};
};
TORCH_MODULE(RecurrentRouter);

// transformer (shared: the task vector plus pos_embed, width d_in) and transformer_layer_specific
// (layer_specific_proj, width H): one post-LN transformer encoder layer over the L positions
// (transformer_heads heads, feed-forward transformer_ffn, dropout 0.1, ReLU), Linear(width -> E).
class TransformerRouterImpl : public RouterImpl {
 public:
  TransformerRouterImpl(const RouterOptions& o, bool layer_specific);
  torch::Tensor forward(const torch::Tensor& z) override;
  torch::nn::Linear layer_specific_proj{nullptr}, proj{nullptr};
  torch::nn::Embedding pos_embed{nullptr};
  torch::nn::TransformerEncoderLayer transformer{nullptr};
};
TORCH_MODULE(TransformerRouter);

// The heads tlmoe's transformer router had before transformer_heads (the largest divisor of the
// hidden size that is <= 4), for checkpoints of that time.
int64_t legacy_transformer_router_heads(int64_t hidden);

// The router type a checkpoint was written with: `kind` as its config says, except that a
// checkpoint of tlmoe before the reference's names holds a layer_specific_proj under "gru", "lstm"
// or "transformer" (then the *_layer_specific type). Other kinds are returned unchanged.
std::string legacy_router_kind(const std::string& kind, bool has_layer_specific_proj);

// A name -> factory table. Duplicate names are rejected (c10::Error); make() on an unknown
// name throws tlmoe::ConfigError for key "routing.router" listing the valid names.
class RouterRegistry {
 public:
  using Factory = std::function<std::shared_ptr<RouterImpl>(const RouterOptions&)>;
  void add(const std::string& name, Factory factory);
  bool contains(const std::string& name) const;
  std::shared_ptr<RouterImpl> make(const RouterOptions& o) const;  // by o.kind
  std::vector<std::string> names() const;                          // in registration order

 private:
  std::vector<std::pair<std::string, Factory>> entries_;
};

// The built-in routers, registered once on first use: the reference's ten types (above), and
// the aliases mlp and layer_mlp.
const RouterRegistry& router_registry();
std::shared_ptr<RouterImpl> make_router(const RouterOptions& o);
std::vector<std::string> router_kinds();    // the ten canonical names, in the reference's order
std::vector<std::string> router_aliases();  // mlp, layer_mlp
// A name's canonical form (an alias resolved; anything else unchanged).
std::string canonical_router_kind(const std::string& kind);

}  // namespace tlmoe::model
