// Routers (docs/method.md §2): a network from one task vector z [B, d_in] to route logits [L, B, E],
// one row per routed layer (encoder layers first, then decoder layers).
//
// Ownership: routers are held as std::shared_ptr<RouterImpl> (the base is abstract, so there is
// no TORCH_MODULE(Router) holder); each concrete router also has its holder (MlpRouter, ...).
// Register one in a parent module with register_module("router", make_router(options)).
//
// Parameter names (checkpoint tensor names, relative to the router). They are the reference's
// own names (CrossTaskMoE modules/router_v2.py; the reference prefixes them with "router.model."),
// so a reference checkpoint maps onto tlmoe by a prefix rewrite:
//   mlp          linear1.{weight,bias} [H,d_in],[H]    linear2.{weight,bias} [L·E,H],[L·E]
//   layer_mlp    router_units.{l}.linear1.{weight,bias} [H,d_in],[H]
//                router_units.{l}.linear2.{weight,bias} [E,H],[E]            (l = 0..L-1)
//   gru, lstm    layer_specific_proj.{weight,bias}      [L·H,d_in],[L·H]
//                rnn.{weight_ih,weight_hh,bias_ih,bias_hh}_l0[_reverse]      (LibTorch GRU/LSTM)
//                proj.{weight,bias}                     [E,2H],[E]
//   transformer  layer_specific_proj.{weight,bias}      [L·H,d_in],[L·H]
//                transformer.self_attn.{in_proj_weight,in_proj_bias} [3H,H],[3H]
//                transformer.self_attn.out_proj.{weight,bias}, transformer.linear1.*,
//                transformer.linear2.*, transformer.norm1.*, transformer.norm2.*
//                proj.{weight,bias}                     [E,H],[E]
// (H = hidden.) Config names map to the reference's router types as
//   mlp = linear, layer_mlp = linear_layer_specific (default), gru = gru_layer_specific,
//   lstm = lstm_layer_specific, transformer = transformer_layer_specific.
//
// Initialisation (docs/method.md §2, the reference's HF init_weights): every torch::nn::Linear weight
// ~ N(0, init_std) with zero bias; GRU/LSTM parameters keep LibTorch's defaults; the attention's
// packed in_proj keeps MultiheadAttention's default (xavier-uniform weight, zero bias) because it
// is not a Linear in the reference either; LayerNorms are ones/zeros.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tlmoe::model {

struct RouterOptions {
  std::string kind = "layer_mlp";  // a name in router_kinds()
  int64_t d_in = 768;              // task-vector dimension
  int64_t hidden = 64;             // H
  int64_t layers = 12;             // L = encoder layers + decoder layers
  int64_t experts = 3;             // E
  double init_std = 0.02;          // std of every Linear weight
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

// gru / lstm: Linear(d_in -> L·H) viewed as a length-L sequence [B,L,H], a 1-layer
// bidirectional GRU/LSTM (H per direction), Linear(2H -> E), transposed to [L,B,E].
class RecurrentRouterImpl : public RouterImpl {
 public:
  RecurrentRouterImpl(const RouterOptions& o, bool lstm);
  torch::Tensor forward(const torch::Tensor& z) override;
  torch::nn::Linear layer_specific_proj{nullptr}, proj{nullptr};
  torch::nn::GRU gru{nullptr};    // registered as "rnn" when !lstm
  torch::nn::LSTM lstm{nullptr};  // registered as "rnn" when lstm
};
TORCH_MODULE(RecurrentRouter);

// transformer: Linear(d_in -> L·H) viewed as a length-L sequence, one post-LN transformer
// encoder layer over the L positions (d = H, heads = the largest divisor of H that is <= 4,
// feed-forward H, dropout 0.1, ReLU), Linear(H -> E).
class TransformerRouterImpl : public RouterImpl {
 public:
  explicit TransformerRouterImpl(const RouterOptions& o);
  torch::Tensor forward(const torch::Tensor& z) override;
  torch::nn::Linear layer_specific_proj{nullptr}, proj{nullptr};
  torch::nn::TransformerEncoderLayer transformer{nullptr};
};
TORCH_MODULE(TransformerRouter);

// The number of attention heads of the transformer router for a given hidden size.
int64_t transformer_router_heads(int64_t hidden);

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

// The built-in routers, registered once on first use: mlp, layer_mlp, gru, lstm, transformer.
const RouterRegistry& router_registry();
std::shared_ptr<RouterImpl> make_router(const RouterOptions& o);
std::vector<std::string> router_kinds();

}  // namespace tlmoe::model
