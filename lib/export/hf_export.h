// `tlmoe export`: one task's routed model as a plain Hugging Face BART directory.
//
// The task's eval-mode route (the model's router or baseline at the checkpoint's temperature)
// picks, per routed layer, a mixture of experts. When every routed layer's route is hard (one
// expert with weight 1), the routed model of that task IS a dense BART made of the chosen experts:
// the export copies them under the dense layer names and the logits are identical. A soft route
// mixes layer outputs, which no dense BART computes; it is refused unless `approximate`, in which
// case each layer's parameters are averaged with the route's weights and the teacher-forced dev
// log-likelihood of the task is measured before and after (the change is reported). A model
// without routed layers (experts = 1, or a Hugging Face directory given as hf:DIR) is the same for
// every task and exports without one.
//
// Written: model.safetensors, config.json, generation_config.json (export/hf_model_files.h: the
// source model's files, when the checkpoint comes from one, with tlmoe's architecture and the
// checkpoint's decoding settings), and, for a bart-bpe tokenizer, its Hugging Face files
// (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json).
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

namespace tlmoe::hf_export {

struct ExportOptions {
  std::filesystem::path checkpoint;  // a tlmoe checkpoint directory, or hf:DIR
  std::string task;                  // required when the checkpoint has routed layers
  std::filesystem::path out;
  bool approximate = false;
  std::string device = "cpu";
  std::string tau;                   // eval.tau for this export ("" = the checkpoint config's eval.tau)
};

struct ExportReport {
  bool routed = true;                      // the model has routed layers (else: one model for every task)
  bool exact = true;                       // every routed layer hard (or no routed layer)
  std::vector<std::string> layer_routes;   // per routed layer: "encoder 0: expert 2" / "decoder 1: 0.7*e0 + 0.3*e1"
  bool tokenizer_written = false;
  bool dev_measured = false;               // approximate exports: the dev comparison ran
  int64_t dev_examples = 0, dev_tokens = 0;
  double dev_loglik_routed = 0, dev_loglik_export = 0;  // mean log p per target token
  std::string dev_note;                    // why the dev comparison did not run, if it did not
};

// Throws UsageError for a routed checkpoint without a task or with an unknown one, or a soft route
// without `approximate`; DataError for a damaged checkpoint.
ExportReport export_task(const ExportOptions& o, std::ostream& log);

}  // namespace tlmoe::hf_export
