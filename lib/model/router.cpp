#include "model/router.h"

#include <algorithm>

#include "common/error.h"

namespace tlmoe::model {

namespace {

namespace F = torch::nn::functional;

// docs/method.md §2: every Linear of the router (including ones nested in library modules, such as the
// attention's out_proj) gets weight ~ N(0, std) and zero bias.
void init_linears(torch::nn::Module& m, double std) {
  torch::NoGradGuard g;
  for (const auto& sub : m.modules(/*include_self=*/false)) {
    if (auto* lin = sub->as<torch::nn::Linear>()) {
      lin->weight.normal_(0.0, std);
      if (lin->bias.defined()) lin->bias.zero_();
    }
  }
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

RouterImpl::RouterImpl(const RouterOptions& o) : options_(o) {
  TORCH_CHECK(o.d_in > 0 && o.hidden > 0 && o.layers > 0 && o.experts > 0,
              "router '", o.kind, "': d_in, hidden, layers and experts must be positive; got d_in=", o.d_in,
              " hidden=", o.hidden, " layers=", o.layers, " experts=", o.experts);
  TORCH_CHECK(o.init_std >= 0.0, "router init_std must be >= 0, got ", o.init_std);
}

void RouterImpl::check_input(const torch::Tensor& z) const {
  TORCH_CHECK(z.dim() == 2 && z.size(1) == options_.d_in, "router '", options_.kind,
              "' expects task vectors [B, ", options_.d_in, "], got ", z.sizes());
}

// ---- mlp -------------------------------------------------------------------------------------

MlpRouterImpl::MlpRouterImpl(const RouterOptions& o) : RouterImpl(o) {
  linear1 = register_module("linear1", torch::nn::Linear(o.d_in, o.hidden));
  linear2 = register_module("linear2", torch::nn::Linear(o.hidden, o.layers * o.experts));
  init_linears(*this, o.init_std);
}

torch::Tensor MlpRouterImpl::forward(const torch::Tensor& z) {
  check_input(z);
  auto h = F::gelu(linear1(z));                                            // [B,H]
  auto x = linear2(h).view({z.size(0), options_.layers, options_.experts});  // [B,L,E]
  return x.transpose(0, 1);                                                // [L,B,E]
}

// ---- layer_mlp -------------------------------------------------------------------------------

RouterUnitImpl::RouterUnitImpl(const RouterOptions& o) {
  linear1 = register_module("linear1", torch::nn::Linear(o.d_in, o.hidden));
  linear2 = register_module("linear2", torch::nn::Linear(o.hidden, o.experts));
}

torch::Tensor RouterUnitImpl::forward(const torch::Tensor& z) {
  return linear2(F::gelu(linear1(z)));  // [B,E]
}

LayerMlpRouterImpl::LayerMlpRouterImpl(const RouterOptions& o) : RouterImpl(o) {
  router_units = register_module("router_units", torch::nn::ModuleList());
  for (int64_t l = 0; l < o.layers; ++l) router_units->push_back(RouterUnit(o));
  init_linears(*this, o.init_std);
}

torch::Tensor LayerMlpRouterImpl::forward(const torch::Tensor& z) {
  check_input(z);
  std::vector<torch::Tensor> per_layer;
  per_layer.reserve(router_units->size());
  for (const auto& unit : *router_units) per_layer.push_back(unit->as<RouterUnit>()->forward(z));  // [B,E]
  return torch::stack(per_layer, 0);  // [L,B,E]
}

// ---- rnn / gru / lstm, shared and layer-specific -------------------------------------------

namespace {

// The reference's position embedding: N(0, init_std) as HF's init_weights gives every nn.Embedding.
torch::nn::Embedding position_embedding(const RouterOptions& o) {
  torch::nn::Embedding e(o.layers, o.d_in);
  torch::NoGradGuard g;
  e->weight.normal_(0.0, o.init_std);
  return e;
}

// The task vector at each of the L positions plus that position's embedding: [B,L,d_in].
torch::Tensor with_positions(const torch::Tensor& z, const torch::nn::Embedding& pos) {
  return z.unsqueeze(1) + pos->weight.unsqueeze(0);
}

}  // namespace

RecurrentRouterImpl::RecurrentRouterImpl(const RouterOptions& o, RecurrentCell cell, bool layer_specific)
    : RouterImpl(o) {
  int64_t in = o.d_in;
  if (layer_specific) {
    layer_specific_proj = register_module("layer_specific_proj", torch::nn::Linear(o.d_in, o.hidden * o.layers));
    in = o.hidden;
  }
  switch (cell) {
    case RecurrentCell::kRnn:
      rnn_tanh = register_module(
          "rnn", torch::nn::RNN(torch::nn::RNNOptions(in, o.hidden).nonlinearity(torch::kTanh).bidirectional(true).batch_first(true)));
      break;
    case RecurrentCell::kGru:
      gru = register_module("rnn", torch::nn::GRU(torch::nn::GRUOptions(in, o.hidden).bidirectional(true).batch_first(true)));
      break;
    case RecurrentCell::kLstm:
      lstm = register_module("rnn", torch::nn::LSTM(torch::nn::LSTMOptions(in, o.hidden).bidirectional(true).batch_first(true)));
      break;
  }
  proj = register_module("proj", torch::nn::Linear(2 * o.hidden, o.experts));
  init_linears(*this, o.init_std);
  if (!layer_specific) pos_embed = register_module("pos_embed", position_embedding(o));
}

torch::Tensor RecurrentRouterImpl::forward(const torch::Tensor& z) {
  check_input(z);
  auto x = layer_specific_proj ? layer_specific_proj(z).view({z.size(0), options_.layers, options_.hidden})  // [B,L,H]
                               : with_positions(z, pos_embed);                                            // [B,L,D]
  auto y = lstm ? std::get<0>(lstm(x)) : gru ? std::get<0>(gru(x)) : std::get<0>(rnn_tanh(x));  // [B,L,2H]
  return proj(y).transpose(0, 1);                                                                // [L,B,E]
}

// ---- transformer, shared and layer-specific --------------------------------------------------

int64_t legacy_transformer_router_heads(int64_t hidden) {
  for (int64_t h = 4; h > 1; --h)
    if (hidden % h == 0) return h;
  return 1;
}

TransformerRouterImpl::TransformerRouterImpl(const RouterOptions& o, bool layer_specific) : RouterImpl(o) {
  const int64_t width = layer_specific ? o.hidden : o.d_in;
  TORCH_CHECK(o.transformer_heads > 0 && width % o.transformer_heads == 0, "router '", o.kind, "': ",
              o.transformer_heads, " heads do not divide the width ", width);
  if (layer_specific)
    layer_specific_proj = register_module("layer_specific_proj", torch::nn::Linear(o.d_in, o.hidden * o.layers));
  transformer = register_module(
      "transformer", torch::nn::TransformerEncoderLayer(
                         torch::nn::TransformerEncoderLayerOptions(width, o.transformer_heads)
                             .dim_feedforward(o.transformer_ffn)
                             .dropout(0.1)
                             .activation(torch::kReLU)));
  proj = register_module("proj", torch::nn::Linear(width, o.experts));
  init_linears(*this, o.init_std);
  if (!layer_specific) pos_embed = register_module("pos_embed", position_embedding(o));
}

torch::Tensor TransformerRouterImpl::forward(const torch::Tensor& z) {
  check_input(z);
  auto x = layer_specific_proj ? layer_specific_proj(z).view({z.size(0), options_.layers, options_.hidden})
                               : with_positions(z, pos_embed);  // [B,L,width]
  auto y = transformer(x.transpose(0, 1));                      // sequence-first: [L,B,width]
  return proj(y);                                               // [L,B,E]
}

std::string legacy_router_kind(const std::string& kind, bool has_layer_specific_proj) {
  if (has_layer_specific_proj && (kind == "gru" || kind == "lstm" || kind == "transformer"))
    return kind + "_layer_specific";
  return kind;
}

// ---- registry --------------------------------------------------------------------------------

void RouterRegistry::add(const std::string& name, Factory factory) {
  TORCH_CHECK(!name.empty(), "router registry: empty router name");
  TORCH_CHECK(!contains(name), "router registry: router '", name, "' is already registered");
  TORCH_CHECK(factory, "router registry: router '", name, "' has no factory");
  entries_.emplace_back(name, std::move(factory));
}

bool RouterRegistry::contains(const std::string& name) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const auto& e) { return e.first == name; });
}

std::shared_ptr<RouterImpl> RouterRegistry::make(const RouterOptions& o) const {
  for (const auto& [name, factory] : entries_)
    if (name == o.kind) return factory(o);
  throw ConfigError("", "routing.router", "unknown router '" + o.kind + "'; valid: " + join(names()));
}

std::vector<std::string> RouterRegistry::names() const {
  std::vector<std::string> v;
  v.reserve(entries_.size());
  for (const auto& e : entries_) v.push_back(e.first);
  return v;
}

const RouterRegistry& router_registry() {
  static const RouterRegistry registry = [] {
    using C = RecurrentCell;
    RouterRegistry r;
    auto recurrent = [&r](const std::string& name, C cell, bool layer_specific) {
      r.add(name, [cell, layer_specific](const RouterOptions& o) {
        return std::make_shared<RecurrentRouterImpl>(o, cell, layer_specific);
      });
    };
    auto transformer = [&r](const std::string& name, bool layer_specific) {
      r.add(name, [layer_specific](const RouterOptions& o) { return std::make_shared<TransformerRouterImpl>(o, layer_specific); });
    };
    r.add("linear", [](const RouterOptions& o) { return std::make_shared<MlpRouterImpl>(o); });
    recurrent("rnn", C::kRnn, false);
    recurrent("lstm", C::kLstm, false);
    recurrent("gru", C::kGru, false);
    transformer("transformer", false);
    recurrent("rnn_layer_specific", C::kRnn, true);
    recurrent("lstm_layer_specific", C::kLstm, true);
    recurrent("gru_layer_specific", C::kGru, true);
    transformer("transformer_layer_specific", true);
    r.add("linear_layer_specific", [](const RouterOptions& o) { return std::make_shared<LayerMlpRouterImpl>(o); });
    return r;
  }();
  return registry;
}

std::string canonical_router_kind(const std::string& kind) {
  if (kind == "mlp") return "linear";
  if (kind == "layer_mlp") return "linear_layer_specific";
  return kind;
}

std::shared_ptr<RouterImpl> make_router(const RouterOptions& o) {
  RouterOptions c = o;
  c.kind = canonical_router_kind(o.kind);
  return router_registry().make(c);
}

std::vector<std::string> router_kinds() { return router_registry().names(); }

std::vector<std::string> router_aliases() { return {"mlp", "layer_mlp"}; }

}  // namespace tlmoe::model
