// Generation: greedy and beam search agree where they must, the key/value cache changes
// nothing, hard routes execute only the selected experts, and the logits processors do what
// Hugging Face's do.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <set>

#include "model/generate.h"
#include "model/seq2seq.h"
#include "model_util.h"

using namespace tlmoe::model;

namespace {

ModelOptions tiny(int64_t experts, int64_t vocab = 29) {
  return tlmoe::test::small_model_options({.vocab = vocab, .experts = experts});
}

// A random model with weights large enough that its outputs vary with the input and position.
Seq2Seq random_model(int64_t experts, uint64_t seed, int64_t vocab = 29) {
  torch::manual_seed(seed);
  Seq2Seq m(tiny(experts, vocab));
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.normal_(0.0, 0.5);
  m->eval();
  return m;
}

struct Inputs {
  torch::Tensor ids, mask;
};

// B sources of different lengths (right-padded with 1), tokens in [3, V).
Inputs random_inputs(int64_t B, int64_t S, uint64_t seed, int64_t vocab = 29) {
  torch::manual_seed(seed);
  auto ids = torch::randint(3, vocab, {B, S}, torch::kLong);
  auto mask = torch::ones({B, S}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = S - (b % 3);
    ids[b].slice(0, len).fill_(1);
    mask[b].slice(0, len).fill_(0);
  }
  return {ids, mask};
}

// Soft routes: random weights per example (rows sum to 1), dense execution.
std::vector<LayerRoute> soft_routes(int64_t layers, int64_t B, int64_t E, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<LayerRoute> r;
  for (int64_t l = 0; l < layers; ++l) r.push_back({torch::softmax(torch::randn({B, E}), 1), torch::Tensor(), false});
  return r;
}

// Hard top-1 routes: example b uses expert (b + l) % E in layer l (so a batch mixes routes).
std::vector<LayerRoute> hard_routes(int64_t layers, int64_t B, int64_t E, bool sparse) {
  std::vector<LayerRoute> r;
  for (int64_t l = 0; l < layers; ++l) {
    auto idx = (torch::arange(B, torch::kLong) + l).remainder(E).view({B, 1});  // [B,1]
    auto w = torch::zeros({B, E}).scatter_(1, idx, 1.0);
    r.push_back({w, idx, sparse});
  }
  return r;
}

GenerationOptions opts(int64_t beams, int64_t max_len = 12) {
  GenerationOptions g;
  g.num_beams = beams;
  g.max_len = max_len;
  g.decoder_start_id = 2;
  g.eos_id = 2;
  g.pad_id = 1;
  return g;
}

int64_t total_tokens(const std::vector<std::vector<int64_t>>& v) {
  int64_t n = 0;
  for (const auto& s : v) n += static_cast<int64_t>(s.size());
  return n;
}

}  // namespace

TEST_CASE("beam search with one beam equals greedy search", "[generate]") {
  for (uint64_t seed : {1u, 2u, 3u}) {
    auto m = random_model(1, seed);
    auto in = random_inputs(5, 7, seed + 10);
    auto g = opts(1);
    auto greedy = generate(*m, in.ids, in.mask, {}, g);
    g.greedy_for_one_beam = false;
    auto beam = generate(*m, in.ids, in.mask, {}, g);
    CHECK(greedy == beam);
    CHECK(total_tokens(greedy) > 5);  // not a trivial all-EOS output
  }
}

TEST_CASE("cached generation equals uncached generation", "[generate]") {
  for (int64_t experts : {1, 3}) {
    auto m = random_model(experts, 7);
    auto in = random_inputs(4, 6, 11);
    auto routes = experts > 1 ? soft_routes(4, 4, experts, 5) : std::vector<LayerRoute>{};
    for (int64_t beams : {1, 3}) {
      auto g = opts(beams);
      auto cached = generate(*m, in.ids, in.mask, routes, g);
      g.use_cache = false;
      auto uncached = generate(*m, in.ids, in.mask, routes, g);
      INFO("experts " << experts << " beams " << beams);
      CHECK(cached == uncached);
      CHECK(total_tokens(cached) > 4);
    }
  }
}

TEST_CASE("cached decoding gives the same logits as a full forward pass", "[generate]") {
  auto m = random_model(3, 4);
  auto in = random_inputs(3, 5, 6);
  auto routes = soft_routes(4, 3, 3, 8);
  torch::NoGradGuard g;
  auto dec = torch::randint(3, 29, {3, 6}, torch::kLong);
  auto full = m->forward(in.ids, in.mask, dec, routes);  // [B,T,V]
  auto enc = m->encode(in.ids, in.mask, routes);
  DecoderCache cache;
  std::vector<torch::Tensor> steps;
  steps.push_back(m->lm_logits(m->decode_cached(dec.slice(1, 0, 2), enc, in.mask, routes, cache)));  // two at once
  for (int64_t t = 2; t < 6; ++t)
    steps.push_back(m->lm_logits(m->decode_cached(dec.slice(1, t, t + 1), enc, in.mask, routes, cache)));
  CHECK(cache.past_len == 6);
  CHECK(torch::allclose(torch::cat(steps, 1), full, 1e-5, 1e-5));
}

TEST_CASE("hard-routed sparse generation equals dense generation", "[generate]") {
  auto m = random_model(3, 21);
  auto in = random_inputs(6, 6, 22);
  for (int64_t beams : {1, 3}) {
    auto g = opts(beams);
    auto sparse = generate(*m, in.ids, in.mask, hard_routes(4, 6, 3, true), g);
    auto dense = generate(*m, in.ids, in.mask, hard_routes(4, 6, 3, false), g);
    INFO("beams " << beams);
    CHECK(sparse == dense);
    CHECK(total_tokens(sparse) > 6);
  }
}

TEST_CASE("sparse generation never runs an expert that no example selected", "[generate]") {
  // Every example routes to expert (b + l) % 3; with a batch of one example (b = 0) layer l uses
  // expert l % 3, so expert 2 of layer 0 and expert 0 of layer 1 (encoder) are unused. Poisoning
  // their weights with NaN must not change the sparse result; the dense path multiplies their
  // NaN output by a zero weight and is poisoned.
  auto m = random_model(3, 31);
  auto in = random_inputs(1, 6, 32);
  auto g = opts(2);
  auto before = generate(*m, in.ids, in.mask, hard_routes(4, 1, 3, true), g);
  {
    torch::NoGradGuard ng;
    for (auto& p : m->model->encoder->enc_routed[0]->experts[2]->parameters()) p.fill_(NAN);
    for (auto& p : m->model->decoder->dec_routed[1]->experts[1]->parameters()) p.fill_(NAN);  // layer 3: (0+3)%3 = 0 used
  }
  auto after = generate(*m, in.ids, in.mask, hard_routes(4, 1, 3, true), g);
  CHECK(before == after);
  auto enc = m->encode(in.ids, in.mask, hard_routes(4, 1, 3, false));
  CHECK(enc.isnan().any().item<bool>());
}

TEST_CASE("forced BOS and EOS and the length limit", "[generate]") {
  auto m = random_model(1, 41);
  auto in = random_inputs(3, 5, 42);
  for (int64_t beams : {1, 2}) {
    auto g = opts(beams, 8);
    g.forced_bos_id = 0;
    g.forced_eos_id = 2;
    auto out = generate(*m, in.ids, in.mask, {}, g);
    for (const auto& s : out) {
      REQUIRE(!s.empty());
      CHECK(s.front() == 0);         // forced at the first position after the start token
      CHECK(s.back() == 2);          // every output ends with EOS
      CHECK(s.size() <= 7);          // max_len 8 counts the start token
    }
  }
}

TEST_CASE("minimum length forbids an early EOS", "[generate]") {
  auto m = random_model(1, 51);
  auto in = random_inputs(4, 5, 52);
  auto g = opts(1, 10);
  g.min_len = 6;
  for (const auto& s : generate(*m, in.ids, in.mask, {}, g)) {
    for (size_t i = 0; i + 1 < s.size() && i < 4; ++i) CHECK(s[i] != 2);  // lengths 1..5 (start + i + 1)
  }
}

TEST_CASE("no-repeat-ngram bans exactly the continuations of earlier n-grams", "[generate]") {
  // sequence 5 6 7 5 6: for n = 3 the last 2 tokens (5 6) occurred at 0..1 followed by 7 -> ban 7.
  // For n = 2 the last token 6 occurred at 1 followed by 7 -> ban 7; at 4 is the current end.
  // For n = 4 the last 3 tokens (7 5 6) never occurred before -> nothing banned.
  auto scores = torch::zeros({3, 10});
  std::vector<std::vector<int64_t>> seqs = {{5, 6, 7, 5, 6}, {5, 6, 7, 5, 6}, {5, 6, 7, 5, 6}};
  auto row = [&](int64_t r, int64_t n) {
    auto s = scores.slice(0, r, r + 1).clone();
    ban_repeated_ngrams(s, {seqs[r]}, n);
    return s[0];
  };
  auto r3 = row(0, 3);
  CHECK(std::isinf(r3[7].item<float>()));
  CHECK(r3.isinf().sum().item<int64_t>() == 1);
  auto r2 = row(1, 2);
  CHECK(std::isinf(r2[7].item<float>()));
  CHECK(r2.isinf().sum().item<int64_t>() == 1);
  CHECK(row(2, 4).isinf().sum().item<int64_t>() == 0);
  // "1 2 1 2 1": n = 2, last token 1 was followed by 2 (twice) -> ban 2 only
  auto s = torch::zeros({1, 5});
  ban_repeated_ngrams(s, {{1, 2, 1, 2, 1}}, 2);
  CHECK(std::isinf(s[0][2].item<float>()));
  CHECK(s.isinf().sum().item<int64_t>() == 1);
}

TEST_CASE("generation with no-repeat-ngram never repeats an n-gram", "[generate]") {
  auto m = random_model(1, 61);
  auto in = random_inputs(4, 5, 62);
  for (int64_t beams : {1, 3}) {
    auto g = opts(beams, 20);
    g.no_repeat_ngram = 2;
    for (auto s : generate(*m, in.ids, in.mask, {}, g)) {
      s.insert(s.begin(), 2);  // the start token takes part in the n-grams
      std::set<std::pair<int64_t, int64_t>> seen;
      for (size_t i = 0; i + 1 < s.size(); ++i) CHECK(seen.insert({s[i], s[i + 1]}).second);
    }
  }
}

TEST_CASE("reference_sparse_positions: after the first step, tokens sit at position d_model / heads", "[generate]") {
  // The reference reads the past length off the sparse cache's head dimension (here 16 / 4 = 4).
  // Reference: the same model whose decoder position rows for positions >= 1 all hold the row of
  // position 4, generating without the flag: it sees exactly what the flagged model sees.
  auto m = random_model(3, 41);
  auto in = random_inputs(3, 6, 42);
  auto ref = random_model(3, 41);
  {
    torch::NoGradGuard ng;
    auto& table = ref->model->decoder->embed_positions->weight;  // row = position + 2
    const int64_t hd = 16 / 4;
    for (int64_t row = 3; row < table.size(0); ++row) table[row].copy_(table[hd + 2]);
  }
  for (int64_t beams : {1, 3}) {
    INFO("beams " << beams);
    auto g = opts(beams);
    g.reference_sparse_positions = true;
    const auto bugged = generate(*m, in.ids, in.mask, hard_routes(4, 3, 3, true), g);
    g.reference_sparse_positions = false;
    CHECK(bugged == generate(*ref, in.ids, in.mask, hard_routes(4, 3, 3, true), g));
    // dense routes: the reference's dense cache has the right length, nothing changes
    g.reference_sparse_positions = true;
    const auto dense = generate(*m, in.ids, in.mask, hard_routes(4, 3, 3, false), g);
    g.reference_sparse_positions = false;
    CHECK(dense == generate(*m, in.ids, in.mask, hard_routes(4, 3, 3, false), g));
  }
  // step by step: the frozen position's logits are the reference model's, and not the plain ones
  torch::NoGradGuard ng;
  const auto routes = hard_routes(4, 1, 3, true);  // cached sparse decoding: one route per batch
  in = random_inputs(1, 6, 43);
  auto dec = torch::randint(3, 29, {1, 5}, torch::kLong);
  auto enc = m->encode(in.ids, in.mask, routes), enc_ref = ref->encode(in.ids, in.mask, routes);
  DecoderCache frozen, plain_ref, plain;
  frozen.frozen_position = 4;
  for (int64_t t = 0; t < 5; ++t) {
    INFO("step " << t);
    auto ids = dec.slice(1, t, t + 1);
    auto a = m->lm_logits(m->decode_cached(ids, enc, in.mask, routes, frozen));
    auto b = ref->lm_logits(ref->decode_cached(ids, enc_ref, in.mask, routes, plain_ref));
    auto c = m->lm_logits(m->decode_cached(ids, enc, in.mask, routes, plain));
    CHECK(torch::allclose(a, b, 1e-5, 1e-5));
    if (t >= 2) CHECK_FALSE(torch::allclose(a, c, 1e-5, 1e-5));  // step 1 is at position 1 vs 4: differs too
  }
}
