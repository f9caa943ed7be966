#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

namespace tlmoe::model {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Everything a group of rows shares while it is generated.
struct GroupInputs {
  torch::Tensor enc;                // [N,S,D]
  torch::Tensor mask;               // [N,S]
  std::vector<LayerRoute> routes;   // rows = N
};

// The logits processors, in Hugging Face's order for BART (min length, no-repeat-ngram,
// forced BOS, forced EOS), on scores [N,V] of the token that follows `seqs` (length cur_len).
void process_scores(torch::Tensor& scores, const std::vector<std::vector<int64_t>>& seqs, int64_t cur_len,
                    const GenerationOptions& o) {
  if (cur_len < o.min_len) scores.select(1, o.eos_id).fill_(kNegInf);
  if (o.no_repeat_ngram > 0) ban_repeated_ngrams(scores, seqs, o.no_repeat_ngram);
  auto force = [&](int64_t tok) {
    scores.fill_(kNegInf);
    scores.select(1, tok).fill_(0.0f);
  };
  if (cur_len == 1 && o.forced_bos_id >= 0) force(o.forced_bos_id);
  if (cur_len == o.max_len - 1 && o.forced_eos_id >= 0) force(o.forced_eos_id);
}

// Log-probabilities (or logits) of the next token for every row: [N,V] float32.
class NextToken {
 public:
  NextToken(Seq2SeqImpl& m, const GroupInputs& in, const GenerationOptions& o) : m_(m), in_(in), use_cache_(o.use_cache) {
    const bool sparse = std::any_of(in.routes.begin(), in.routes.end(), [](const LayerRoute& r) { return r.sparse; });
    if (o.reference_sparse_positions && sparse) cache_.frozen_position = m.options().layer.d_model / m.options().layer.heads;
  }

  torch::Tensor operator()(const std::vector<std::vector<int64_t>>& seqs) {
    const int64_t N = static_cast<int64_t>(seqs.size());
    const int64_t t = static_cast<int64_t>(seqs[0].size());
    const int64_t from = use_cache_ ? cache_.past_len : 0;
    std::vector<int64_t> flat;
    flat.reserve(static_cast<size_t>(N * (t - from)));
    for (const auto& s : seqs) flat.insert(flat.end(), s.begin() + from, s.end());
    auto ids = torch::tensor(flat, torch::kLong).view({N, t - from}).to(in_.enc.device());  // [N,T]
    torch::Tensor h = use_cache_ ? m_.decode_cached(ids, in_.enc, in_.mask, in_.routes, cache_)
                                 : m_.decode(ids, in_.enc, in_.mask, in_.routes, 0);      // [N,T,D]
    return m_.lm_logits(h.slice(1, h.size(1) - 1)).squeeze(1).to(torch::kCPU, torch::kFloat);  // [N,V]
  }

  // Rows now continue rows idx of the previous step (beam search).
  void reorder(const std::vector<int64_t>& idx) {
    if (use_cache_) cache_.reorder(torch::tensor(idx, torch::kLong));
  }

 private:
  Seq2SeqImpl& m_;
  const GroupInputs& in_;
  bool use_cache_;
  DecoderCache cache_;
};

std::vector<std::vector<int64_t>> greedy(Seq2SeqImpl& m, const GroupInputs& in, const GenerationOptions& o) {
  const int64_t N = in.enc.size(0);
  std::vector<std::vector<int64_t>> seqs(N, std::vector<int64_t>{o.decoder_start_id});
  std::vector<bool> running(N, true);
  NextToken next(m, in, o);
  for (int64_t cur_len = 1; cur_len < o.max_len; ++cur_len) {
    auto scores = next(seqs);                  // [N,V]
    process_scores(scores, seqs, cur_len, o);
    auto best = scores.argmax(1).contiguous();  // [N]
    const int64_t* b = best.data_ptr<int64_t>();
    bool any = false;
    for (int64_t i = 0; i < N; ++i) {
      seqs[i].push_back(running[i] ? b[i] : o.pad_id);
      if (running[i] && b[i] == o.eos_id) running[i] = false;
      any = any || running[i];
    }
    if (!any) break;
  }
  std::vector<std::vector<int64_t>> out(N);
  for (int64_t i = 0; i < N; ++i) {
    for (size_t j = 1; j < seqs[i].size(); ++j) {
      out[i].push_back(seqs[i][j]);
      if (seqs[i][j] == o.eos_id) break;
    }
  }
  return out;
}

// The finished hypotheses of one example (transformers' BeamHypotheses).
class Hypotheses {
 public:
  Hypotheses(int64_t beams, double length_penalty, bool early_stopping)
      : beams_(beams), lp_(length_penalty), early_(early_stopping) {}

  // `len` divides by len^length_penalty: the sequence length with the start token, without EOS
  // (transformers 4.x), or the generated length (5.x at max_len).
  void add(const std::vector<int64_t>& seq, double sum_logprobs, size_t len) {
    const double score = sum_logprobs / std::pow(static_cast<double>(len), lp_);
    if (static_cast<int64_t>(items_.size()) < beams_ || score > worst_) {
      items_.emplace_back(score, seq);
      if (static_cast<int64_t>(items_.size()) > beams_) {
        // drop the worst; the new worst is the second-lowest score
        size_t lo = 0;
        for (size_t i = 1; i < items_.size(); ++i)
          if (items_[i].first < items_[lo].first) lo = i;
        items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(lo));
        worst_ = items_[0].first;
        for (const auto& it : items_) worst_ = std::min(worst_, it.first);
      } else {
        worst_ = std::min(worst_, score);
      }
    }
  }

  bool is_done(double best_sum_logprobs, int64_t cur_len) const {
    if (static_cast<int64_t>(items_.size()) < beams_) return false;
    if (early_) return true;
    return worst_ >= best_sum_logprobs / std::pow(static_cast<double>(cur_len), lp_);
  }

  // The highest-scoring hypothesis (the last of equal scores in insertion order, as Python's
  // stable sort followed by pop() picks).
  const std::vector<int64_t>& best() const {
    size_t hi = 0;
    for (size_t i = 1; i < items_.size(); ++i)
      if (items_[i].first >= items_[hi].first) hi = i;
    return items_[hi].second;
  }

 private:
  int64_t beams_;
  double lp_;
  bool early_;
  double worst_ = 1e9;
  std::vector<std::pair<double, std::vector<int64_t>>> items_;
};

std::vector<std::vector<int64_t>> beam_search(Seq2SeqImpl& m, const GroupInputs& in, const GenerationOptions& o) {
  const int64_t nb = o.num_beams;
  const int64_t B = in.enc.size(0);
  const int64_t N = B * nb;
  // Every example's inputs repeated once per beam: row b * nb + k is beam k of example b.
  GroupInputs x;
  x.enc = in.enc.repeat_interleave(nb, 0);    // [N,S,D]
  x.mask = in.mask.repeat_interleave(nb, 0);  // [N,S]
  for (const auto& r : in.routes)
    x.routes.push_back({r.weights.defined() ? r.weights.repeat_interleave(nb, 0) : r.weights,
                        r.indices.defined() ? r.indices.repeat_interleave(nb, 0) : r.indices, r.sparse});
  std::vector<std::vector<int64_t>> seqs(N, std::vector<int64_t>{o.decoder_start_id});
  auto beam_scores = torch::zeros({B, nb}, torch::kFloat);
  beam_scores.slice(1, 1).fill_(-1e9f);
  beam_scores = beam_scores.view({N});
  std::vector<Hypotheses> hyps(B, Hypotheses(nb, o.length_penalty, o.early_stopping));
  std::vector<bool> done(B, false);
  NextToken next(m, x, o);

  for (int64_t cur_len = 1; cur_len < o.max_len; ++cur_len) {
    auto logits = next(seqs);                                            // [N,V]
    const int64_t V = logits.size(1);
    auto scores = torch::log_softmax(logits, 1);
    process_scores(scores, seqs, cur_len, o);
    scores = (scores + beam_scores.unsqueeze(1)).view({B, nb * V});       // [B, nb*V]
    auto [top_v, top_i] = scores.topk(2 * nb, 1, true, true);            // [B, 2nb]
    top_v = top_v.contiguous();
    top_i = top_i.contiguous();
    auto tv = top_v.accessor<float, 2>();
    auto ti = top_i.accessor<int64_t, 2>();

    std::vector<int64_t> src(N), tok(N);
    std::vector<float> new_scores(N, 0.0f);
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) {
        for (int64_t k = 0; k < nb; ++k) {
          src[b * nb + k] = b * nb;
          tok[b * nb + k] = o.pad_id;
          new_scores[b * nb + k] = 0.0f;
        }
        continue;
      }
      int64_t filled = 0;
      if (o.current_beam_search && cur_len == o.max_len - 1) {
        // transformers 5.x: the length limit finishes the top `nb` candidates, EOS or not
        for (int64_t rank = 0; rank < nb; ++rank) {
          const int64_t beam = ti[b][rank] / V, token = ti[b][rank] % V;
          auto seq = seqs[b * nb + beam];
          if (token != o.eos_id) seq.push_back(token);
          hyps[b].add(seq, static_cast<double>(tv[b][rank]), static_cast<size_t>(cur_len));
        }
        done[b] = true;
        for (int64_t k = 0; k < nb; ++k) src[b * nb + k] = b * nb, tok[b * nb + k] = o.pad_id;
        continue;
      }
      for (int64_t rank = 0; rank < 2 * nb && filled < nb; ++rank) {
        const int64_t beam = ti[b][rank] / V, token = ti[b][rank] % V;
        const int64_t row = b * nb + beam;
        if (token == o.eos_id) {
          if (rank >= nb) continue;
          hyps[b].add(seqs[row], static_cast<double>(tv[b][rank]), seqs[row].size());
        } else {
          src[b * nb + filled] = row;
          tok[b * nb + filled] = token;
          new_scores[b * nb + filled] = tv[b][rank];
          ++filled;
        }
      }
      // the best running beam (current) or the best candidate, EOS included (transformers 4.x)
      const double best = o.current_beam_search ? new_scores[b * nb] : tv[b][0];
      done[b] = done[b] || hyps[b].is_done(best, cur_len);
    }
    std::vector<std::vector<int64_t>> grown(N);
    for (int64_t r = 0; r < N; ++r) {
      grown[r] = seqs[src[r]];
      grown[r].push_back(tok[r]);
    }
    seqs = std::move(grown);
    beam_scores = torch::tensor(new_scores, torch::kFloat);
    next.reorder(src);
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
  }
  auto bs = beam_scores.accessor<float, 1>();
  std::vector<std::vector<int64_t>> out(B);
  for (int64_t b = 0; b < B; ++b) {
    if (!done[b])
      for (int64_t k = 0; k < nb; ++k)
        hyps[b].add(seqs[b * nb + k], static_cast<double>(bs[b * nb + k]), seqs[b * nb + k].size());
    const auto& best = hyps[b].best();
    out[b].assign(best.begin() + 1, best.end());
    if (static_cast<int64_t>(best.size()) < o.max_len) out[b].push_back(o.eos_id);
  }
  return out;
}

std::vector<std::vector<int64_t>> generate_group(Seq2SeqImpl& m, const torch::Tensor& input_ids,
                                                 const torch::Tensor& input_mask,
                                                 const std::vector<LayerRoute>& routes, const GenerationOptions& o) {
  GroupInputs in;
  in.enc = m.encode(input_ids, input_mask, routes);  // [B,S,D]
  in.mask = input_mask;
  in.routes = routes;
  return o.num_beams <= 1 && o.greedy_for_one_beam ? greedy(m, in, o) : beam_search(m, in, o);
}

}  // namespace

void ban_repeated_ngrams(torch::Tensor& scores, const std::vector<std::vector<int64_t>>& sequences, int64_t n) {
  if (n <= 0) return;
  for (size_t row = 0; row < sequences.size(); ++row) {
    const auto& s = sequences[row];
    const int64_t len = static_cast<int64_t>(s.size());
    if (len + 1 < n) continue;
    // the last n-1 tokens; every earlier occurrence bans the token that followed it
    for (int64_t i = 0; i + n <= len; ++i) {
      bool match = true;
      for (int64_t j = 0; j < n - 1 && match; ++j) match = s[i + j] == s[len - (n - 1) + j];
      if (match) scores[static_cast<int64_t>(row)][s[i + n - 1]] = kNegInf;
    }
  }
}

std::vector<std::vector<int64_t>> generate(Seq2SeqImpl& model, const torch::Tensor& input_ids,
                                           const torch::Tensor& input_mask, const std::vector<LayerRoute>& routes,
                                           const GenerationOptions& opts) {
  TORCH_CHECK(opts.num_beams >= 1, "generate: num_beams must be >= 1");
  TORCH_CHECK(opts.max_len >= 2, "generate: max_len must be >= 2 (it counts the decoder start token)");
  torch::NoGradGuard no_grad;
  const int64_t B = input_ids.size(0);
  if (B == 0) return {};
  bool sparse = false;
  for (const auto& r : routes) sparse = sparse || (r.sparse && r.indices.defined());
  if (!sparse || !opts.use_cache) return generate_group(model, input_ids, input_mask, routes, opts);

  // Hard routes: rows with the same experts in every layer form one group.
  std::vector<torch::Tensor> idx;
  for (const auto& r : routes) idx.push_back(r.sparse && r.indices.defined() ? r.indices.cpu().contiguous() : torch::Tensor());
  std::map<std::vector<int64_t>, std::vector<int64_t>> groups;
  std::vector<std::vector<int64_t>> order;  // keys in order of first appearance
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> key;
    for (const auto& t : idx)
      if (t.defined())
        for (int64_t k = 0; k < t.size(1); ++k) key.push_back(t[b][k].item<int64_t>());
    auto [it, fresh] = groups.try_emplace(key);
    if (fresh) order.push_back(key);
    it->second.push_back(b);
  }
  std::vector<std::vector<int64_t>> out(B);
  for (const auto& key : order) {
    const auto& rows = groups[key];
    auto sel = torch::tensor(rows, torch::kLong).to(input_ids.device());
    std::vector<LayerRoute> sub;
    for (const auto& r : routes)
      sub.push_back({r.weights.defined() ? r.weights.index_select(0, sel) : r.weights,
                     r.indices.defined() ? r.indices.index_select(0, sel) : r.indices, r.sparse});
    auto res = generate_group(model, input_ids.index_select(0, sel), input_mask.index_select(0, sel), sub, opts);
    for (size_t i = 0; i < rows.size(); ++i) out[rows[i]] = std::move(res[i]);
  }
  return out;
}

}  // namespace tlmoe::model
