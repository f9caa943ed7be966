// Batched generation for the seq2seq model (docs/method.md §6.7, §8.2): greedy search and beam search
// with Hugging Face's semantics, a key/value cache, and the logits processors BART's generation
// config uses (forced BOS/EOS, no-repeat-ngram, minimum length).
//
// Routing: the caller passes one LayerRoute per layer for the batch. Dense (soft) routes run
// every expert and keep a cache per expert. Hard routes (sparse) run only the selected experts:
// rows are grouped by route and each group is generated on its own, so a layer executes and
// caches only the experts its group selected.
//
// Beam search follows transformers' BeamSearchScorer (the version CrossFit and the paper ran):
//   beam scores start at 0 for beam 0 and -1e9 for the others; each step takes the 2*beams best
//   (beam, token) continuations of sum log p; an EOS among the first `beams` candidates closes a
//   hypothesis scored sum_logprobs / len^length_penalty (len counts the decoder start token);
//   an example is done when it has `beams` hypotheses and, unless early_stopping, no running
//   beam can beat the worst of them (best running sum / cur_len^length_penalty); at max_len the
//   running beams are added as hypotheses. max_len counts the decoder start token (HF max_length).
// current_beam_search = true follows instead the vectorised beam search of current transformers
// releases (5.x; the golden tests pin one), which differs in two places: the early-stop check
// compares the worst hypothesis with the best *running* (unfinished) beam, not the best
// candidate; and at max_len the top `beams` candidates (EOS or not) become hypotheses scored by
// the generated length (start token excluded), instead of the running beams scored by their full
// length. With a forced EOS at max_len - 1 and early stopping both agree on the last step.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/seq2seq.h"

namespace tlmoe::model {

struct GenerationOptions {
  int64_t num_beams = 1;          // 1 = greedy search
  int64_t max_len = 64;           // decoder length including the start token
  int64_t min_len = 0;            // EOS is forbidden while the length is below this
  double length_penalty = 1.0;
  int64_t no_repeat_ngram = 0;    // 0 = off
  bool early_stopping = false;
  bool current_beam_search = false;  // transformers 5.x beam search semantics (see above)
  int64_t decoder_start_id = 2;
  int64_t forced_bos_id = -1;     // >= 0: the first generated token (after the start token)
  int64_t forced_eos_id = -1;     // >= 0: the token forced at the last position (max_len - 1)
  int64_t eos_id = 2;
  int64_t pad_id = 1;
  bool use_cache = true;          // false: recompute the whole prefix every step (a test reference)
  // The reference's sparse decoding (reference_compat): with hard routes, every step after the
  // first embeds its token at position d_model / heads (the cache's head dimension, which the
  // reference reads as the past length) instead of its own (docs/method.md §13.2)
  bool reference_sparse_positions = false;
  bool greedy_for_one_beam = true; // num_beams = 1 runs greedy search; false: beam search with one
                                   // beam (the same result by construction; a test reference)
};

// Generates for every row of input_ids [B,S] (mask [B,S], 1 = token). Returns per row the
// generated ids after the decoder start token, through EOS when one was produced. The model
// should be in eval() mode.
std::vector<std::vector<int64_t>> generate(Seq2SeqImpl& model, const torch::Tensor& input_ids,
                                           const torch::Tensor& input_mask, const std::vector<LayerRoute>& routes,
                                           const GenerationOptions& opts);

// Bans, per row of `scores` [N,V], every token that would repeat an n-gram already in
// `sequences[row]` (Hugging Face's NoRepeatNGramLogitsProcessor). Exposed for tests.
void ban_repeated_ngrams(torch::Tensor& scores, const std::vector<std::vector<int64_t>>& sequences, int64_t n);

}  // namespace tlmoe::model
