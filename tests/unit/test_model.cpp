// The BART backbone and expert layers against hand-written references.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "model/seq2seq.h"
#include "model_util.h"

using namespace tlmoe::model;

namespace {

ModelOptions tiny(int64_t experts) {
  return tlmoe::test::small_model_options({.vocab = 37, .experts = experts, .max_positions = 32});
}

// Hand-written attention: softmax(q k^T / sqrt(hd) + mask) v, per head, with explicit loops over heads.
torch::Tensor ref_attention(AttentionImpl& a, const torch::Tensor& x, const torch::Tensor& kv,
                            const torch::Tensor& key_valid /*[B,S] bool or undefined*/, bool causal, int64_t H) {
  const auto B = x.size(0), T = x.size(1), D = x.size(2), S = kv.size(1), hd = D / H;
  auto q = torch::matmul(x, a.q_proj->weight.t()) + a.q_proj->bias;
  auto k = torch::matmul(kv, a.k_proj->weight.t()) + a.k_proj->bias;
  auto v = torch::matmul(kv, a.v_proj->weight.t()) + a.v_proj->bias;
  auto out = torch::zeros({B, T, D});
  for (int64_t h = 0; h < H; ++h) {
    auto qh = q.slice(2, h * hd, (h + 1) * hd), kh = k.slice(2, h * hd, (h + 1) * hd),
         vh = v.slice(2, h * hd, (h + 1) * hd);
    auto scores = torch::matmul(qh, kh.transpose(1, 2)) / std::sqrt(static_cast<double>(hd));  // [B,T,S]
    auto neg = torch::full_like(scores, -1e30);
    if (key_valid.defined()) scores = torch::where(key_valid.view({B, 1, S}), scores, neg);
    if (causal) {
      auto tri = torch::ones({T, S}, torch::kBool).tril();
      scores = torch::where(tri.view({1, T, S}), scores, neg);
    }
    out.slice(2, h * hd, (h + 1) * hd).copy_(torch::matmul(torch::softmax(scores, -1), vh));
  }
  return torch::matmul(out, a.out_proj->weight.t()) + a.out_proj->bias;
}

torch::Tensor ref_ln(torch::nn::LayerNormImpl& ln, const torch::Tensor& x) {
  auto mu = x.mean(-1, true);
  auto var = (x - mu).pow(2).mean(-1, true);
  return (x - mu) / torch::sqrt(var + 1e-5) * ln.weight + ln.bias;
}

torch::Tensor ref_gelu(const torch::Tensor& x) { return 0.5 * x * (1 + torch::erf(x / std::sqrt(2.0))); }

torch::Tensor ref_ffn(torch::nn::LinearImpl& fc1, torch::nn::LinearImpl& fc2, const torch::Tensor& x) {
  return torch::matmul(ref_gelu(torch::matmul(x, fc1.weight.t()) + fc1.bias), fc2.weight.t()) + fc2.bias;
}

std::vector<LayerRoute> one_hot_routes(const torch::Tensor& choice /*[L,B]*/, int64_t E, bool sparse,
                                       bool requires_grad, std::vector<torch::Tensor>* leaves = nullptr) {
  return tlmoe::test::one_hot_routes(choice, E, sparse, torch::kCPU, requires_grad, leaves);
}


}  // namespace

TEST_CASE("post-LN encoder and decoder layers equal a hand-written BART block", "[model]") {
  torch::manual_seed(0);
  LayerOptions o;
  o.d_model = 16;
  o.heads = 4;
  o.ffn_dim = 24;
  o.dropout = o.attention_dropout = o.activation_dropout = 0;
  EncoderLayer enc(o);
  DecoderLayer dec(o);
  // non-trivial LayerNorm parameters
  {
    torch::NoGradGuard g;
    for (auto& p : enc->named_parameters()) if (p.key().find("layer_norm") != std::string::npos) p.value().uniform_(-1, 1);
    for (auto& p : dec->named_parameters()) if (p.key().find("layer_norm") != std::string::npos) p.value().uniform_(-1, 1);
  }
  const int64_t B = 3, S = 5, T = 4;
  auto x = torch::randn({B, S, 16});
  auto valid = torch::tensor({1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0}, torch::kBool).view({B, S});
  auto y = enc->forward(x, valid.view({B, 1, 1, S}));
  auto h = ref_ln(*enc->self_attn_layer_norm, x + ref_attention(*enc->self_attn, x, x, valid, false, 4));
  auto expect = ref_ln(*enc->final_layer_norm, h + ref_ffn(*enc->fc1, *enc->fc2, h));
  // padded query rows still attend to valid keys; compare every position
  CHECK(torch::allclose(y, expect, 1e-4, 1e-5));

  auto yd_in = torch::randn({B, T, 16});
  auto yd = dec->forward(yd_in, y, valid.view({B, 1, 1, S}));
  auto hd = ref_ln(*dec->self_attn_layer_norm, yd_in + ref_attention(*dec->self_attn, yd_in, yd_in, {}, true, 4));
  auto cd = ref_ln(*dec->encoder_attn_layer_norm, hd + ref_attention(*dec->encoder_attn, hd, y, valid, false, 4));
  auto expect_d = ref_ln(*dec->final_layer_norm, cd + ref_ffn(*dec->fc1, *dec->fc2, cd));
  CHECK(torch::allclose(yd, expect_d, 1e-4, 1e-5));
}

TEST_CASE("embeddings: BART position offset 2, layernorm_embedding, tied LM head with final_logits_bias",
          "[model]") {
  torch::manual_seed(1);
  auto o = tiny(1);
  o.encoder_layers = 1;
  o.decoder_layers = 1;
  Seq2Seq m(o);
  m->eval();
  auto ids = torch::tensor({{0, 5, 6, 2}}, torch::kLong);
  // encode with the layer replaced by identity is not possible; check the embedding path directly:
  auto& enc = m->model->encoder;
  auto emb = m->model->shared->weight.index_select(0, ids[0]) + enc->embed_positions->weight.slice(0, 2, 6);
  auto expect = ref_ln(*enc->layernorm_embedding, emb.unsqueeze(0));
  auto h0 = enc->layernorm_embedding(m->model->shared(ids) + enc->embed_positions(torch::arange(2, 6)).unsqueeze(0));
  CHECK(torch::allclose(h0, expect, 1e-5, 1e-6));
  // LM head is x E^T + bias
  {
    torch::NoGradGuard g;
    m->final_logits_bias.uniform_(-1, 1);
  }
  auto hid = torch::randn({1, 2, o.layer.d_model});
  auto logits = m->lm_logits(hid);
  CHECK(torch::allclose(logits, torch::matmul(hid, m->model->shared->weight.t()) + m->final_logits_bias, 1e-5, 1e-6));
  // the padding row of the shared embedding starts at zero
  CHECK(m->model->shared->weight[o.pad_id].abs().sum().item<float>() == 0.0f);
}

TEST_CASE("parameter names follow Hugging Face BART, experts nest under experts.{e}", "[model]") {
  auto o = tiny(1);
  o.encoder_layers = 1;
  o.decoder_layers = 1;
  Seq2Seq vanilla(o);
  std::set<std::string> names;
  for (auto& p : vanilla->named_parameters()) names.insert(p.key());
  for (auto& b : vanilla->named_buffers()) names.insert(b.key());
  std::set<std::string> expect = {"model.shared.weight", "model.encoder.embed_positions.weight",
                                  "model.encoder.layernorm_embedding.weight", "model.encoder.layernorm_embedding.bias",
                                  "model.decoder.embed_positions.weight", "model.decoder.layernorm_embedding.weight",
                                  "model.decoder.layernorm_embedding.bias", "final_logits_bias"};
  for (std::string proj : {"q_proj", "k_proj", "v_proj", "out_proj"})
    for (std::string wb : {"weight", "bias"}) {
      expect.insert("model.encoder.layers.0.self_attn." + proj + "." + wb);
      expect.insert("model.decoder.layers.0.self_attn." + proj + "." + wb);
      expect.insert("model.decoder.layers.0.encoder_attn." + proj + "." + wb);
    }
  for (std::string wb : {"weight", "bias"}) {
    for (std::string m : {"fc1", "fc2", "self_attn_layer_norm", "final_layer_norm"}) {
      expect.insert("model.encoder.layers.0." + m + "." + wb);
      expect.insert("model.decoder.layers.0." + m + "." + wb);
    }
    expect.insert("model.decoder.layers.0.encoder_attn_layer_norm." + wb);
  }
  CHECK(names == expect);

  auto o3 = tiny(3);
  o3.vanilla_decoder_layers = {1};
  Seq2Seq moe(o3);
  std::set<std::string> moe_names;
  for (auto& p : moe->named_parameters()) moe_names.insert(p.key());
  CHECK(moe_names.count("model.encoder.layers.0.experts.2.fc1.weight") == 1);
  CHECK(moe_names.count("model.decoder.layers.0.experts.1.encoder_attn.q_proj.bias") == 1);
  CHECK(moe_names.count("model.decoder.layers.1.fc1.weight") == 1);  // vanilla decoder layer 1 (docs/method.md §13.1)
  CHECK(moe_names.count("model.decoder.layers.1.experts.0.fc1.weight") == 0);
  CHECK(moe->routed_layers() == 3);
}

TEST_CASE("parameter counts of BART-base and its m=3 MoE equal docs/method.md §1.9", "[model][slow]") {
  ModelOptions o;  // BART-base defaults: V=50265, D=768, 6+6 layers, 12 heads, FFN 3072
  o.experts = 1;
  auto count = [](torch::nn::Module& m) {
    int64_t n = 0;
    for (auto& p : m.parameters()) n += p.numel();
    return n;
  };
  {
    Seq2Seq vanilla(o);
    CHECK(count(*vanilla) == 139420416);
    CHECK(count(*vanilla->model->encoder->enc_plain[0]) == 7087872);
    CHECK(count(*vanilla->model->decoder->dec_plain[0]) == 9451776);
  }
  o.experts = 3;
  Seq2Seq moe(o);
  CHECK(count(*moe) == 337896192);
}

TEST_CASE("one-hot routes: dense and sparse execution agree in values and gradients", "[model]") {
  torch::manual_seed(2);
  auto o = tiny(3);
  Seq2Seq m(o);
  m->eval();
  const int64_t B = 5, S = 6, T = 4;
  auto ids = torch::randint(3, o.vocab_size, {B, S}, torch::kLong);
  auto mask = torch::ones({B, S}, torch::kLong);
  mask[1].slice(0, 4).zero_();
  mask[3].slice(0, 2).zero_();
  auto dec_ids = torch::randint(3, o.vocab_size, {B, T}, torch::kLong);
  auto choice = torch::randint(0, 3, {4, B}, torch::kLong);
  choice[0].fill_(1);  // one layer where experts 0 and 2 are empty

  std::vector<torch::Tensor> wd, ws;
  auto dense = m->forward(ids, mask, dec_ids, one_hot_routes(choice, 3, false, true, &wd));
  auto sparse = m->forward(ids, mask, dec_ids, one_hot_routes(choice, 3, true, true, &ws));
  CHECK(torch::allclose(dense, sparse, 1e-5, 1e-6));
  auto params = m->parameters();
  std::vector<torch::Tensor> inputs_d = params, inputs_s = params;
  inputs_d.insert(inputs_d.end(), wd.begin(), wd.end());
  inputs_s.insert(inputs_s.end(), ws.begin(), ws.end());
  auto gd = torch::autograd::grad({dense.pow(2).sum()}, inputs_d, {}, false, false, true);
  auto gs = torch::autograd::grad({sparse.pow(2).sum()}, inputs_s, {}, false, false, true);
  int64_t compared = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!gs[i].defined()) {
      // an expert no example is routed to: not run in the sparse path, an exact zero gradient in the dense one
      CHECK((!gd[i].defined() || gd[i].abs().sum().item<float>() == 0.0f));
      continue;
    }
    REQUIRE(gd[i].defined());
    CHECK(torch::allclose(gd[i], gs[i], 1e-4, 1e-6));
    ++compared;
  }
  CHECK(compared > 100);
  // route-weight gradients: dense gives d/dw_e for every expert, sparse for the selected ones; equal there
  for (size_t l = 0; l < wd.size(); ++l) {
    auto g_dense = gd[params.size() + l], g_sparse = gs[params.size() + l];
    REQUIRE(g_dense.defined());
    REQUIRE(g_sparse.defined());
    auto sel = choice[l].unsqueeze(1);
    CHECK(torch::allclose(g_sparse.gather(1, sel), g_dense.gather(1, sel), 1e-4, 1e-5));
    CHECK(g_dense.abs().sum().item<float>() > 0);
  }
}

TEST_CASE("soft routes mix every expert's output by the weights", "[model]") {
  torch::manual_seed(3);
  auto o = tiny(2);
  o.encoder_layers = 1;
  o.decoder_layers = 1;
  Seq2Seq m(o);
  m->eval();
  auto x = torch::randn({2, 3, 16});
  auto mask = torch::ones({2, 1, 1, 3}, torch::kBool);
  auto w = torch::tensor({{0.25f, 0.75f}, {0.6f, 0.4f}});
  auto& layer = m->model->encoder->enc_routed[0];
  auto y = layer->forward(x, mask, {w, {}, false});
  auto e0 = layer->experts[0]->forward(x, mask), e1 = layer->experts[1]->forward(x, mask);
  auto expect = e0 * w.select(1, 0).view({2, 1, 1}) + e1 * w.select(1, 1).view({2, 1, 1});
  CHECK(torch::allclose(y, expect, 1e-6, 1e-7));
}

TEST_CASE("experts initialised from a dense model: copies plus noise, regulariser measures their distance",
          "[model]") {
  torch::manual_seed(4);
  Seq2Seq dense(tiny(1));
  std::map<std::string, torch::Tensor> state;
  for (auto& p : dense->named_parameters()) state[p.key()] = p.value().detach().clone();
  for (auto& b : dense->named_buffers()) state[b.key()] = b.value().clone();
  Seq2Seq moe(tiny(3));
  moe->init_from_dense(state, 0.0);
  CHECK(moe->expert_difference().item<float>() == 0.0f);
  auto a = moe->model->encoder->enc_routed[1]->experts[2]->fc1->weight;
  CHECK(torch::equal(a, state["model.encoder.layers.1.fc1.weight"]));
  CHECK(torch::equal(moe->model->shared->weight, state["model.shared.weight"]));

  moe->init_from_dense(state, 1e-3);
  auto diff = (moe->model->encoder->enc_routed[1]->experts[0]->fc1->weight - state["model.encoder.layers.1.fc1.weight"]);
  CHECK(diff.std().item<float>() == Approx(1e-3).epsilon(0.1));
  // regulariser: hand computation for one layer of 3 experts
  auto& L0 = moe->model->encoder->enc_routed[0]->experts;
  double hand = 0;
  for (auto [i, j] : {std::pair{0, 1}, std::pair{0, 2}, std::pair{1, 2}}) {
    auto pa = L0[i]->parameters(), pb = L0[j]->parameters();
    for (size_t k = 0; k < pa.size(); ++k) hand += (pa[k] - pb[k]).pow(2).sum().sqrt().item<double>();
  }
  hand /= 3;
  double total = moe->expert_difference().item<double>();
  CHECK(total > hand);  // four routed layers contribute
  CHECK(hand > 0);

  state.erase("model.decoder.layers.0.fc2.bias");
  CHECK_THROWS_WITH(moe->init_from_dense(state, 0.0), Catch::Contains("model.decoder.layers.0.fc2.bias"));
}
