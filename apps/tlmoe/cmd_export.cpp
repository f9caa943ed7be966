// tlmoe export --checkpoint CK|hf:DIR [--task T] --out DIR [--approximate] [--device cpu|cuda|auto]
#include <iostream>
#include <memory>

#include "commands.h"
#include "export/hf_export.h"

namespace tlmoe::app {

void setup_export(CLI::App& app) {
  auto o = std::make_shared<hf_export::ExportOptions>();
  auto* cmd = app.add_subcommand(
      "export", "One task's routed model as a plain Hugging Face BART directory (model.safetensors, config.json, "
                "generation_config.json, tokenizer files) that transformers loads and CTranslate2 converts");
  cmd->footer(
      "\nA task whose route is hard (one expert per routed layer) is exported exactly: the chosen experts\n"
      "become the layers of a dense BART with the same logits as tlmoe's routed model. A soft route\n"
      "(mixing experts) is refused unless --approximate: then each layer is the route-weighted average of\n"
      "its experts' parameters, and the task's teacher-forced dev log-likelihood per token is reported for\n"
      "the routed and the exported model. A checkpoint without routed layers (experts = 1, or hf:DIR) is\n"
      "the same model for every task and needs no --task. A checkpoint that comes from a Hugging Face model\n"
      "keeps that model's config.json and generation_config.json fields. Tokenizer files are written for\n"
      "tokenizer.kind bart-bpe. Serving with CTranslate2: docs/export.md.\n"
      "Examples:\n"
      "  tlmoe export --checkpoint runs/paper/stage2/best --task glue-sst2 --out exports/glue-sst2\n"
      "  tlmoe export --checkpoint runs/vanilla/best --out exports/vanilla\n");
  cmd->add_option("--checkpoint", o->checkpoint, "TL-MoE checkpoint (a run's best/ or last/), or hf:DIR")->required();
  cmd->add_option("--task", o->task,
                  "Task whose route is exported (a row of the checkpoint's task table); required when the checkpoint "
                  "has routed layers, ignored otherwise");
  cmd->add_option("--out", o->out, "Output directory (created; files in it are replaced)")->required();
  cmd->add_flag("--approximate", o->approximate,
                "Soft routes: export the route-weighted average of the experts and report the dev log-likelihood change");
  cmd->add_option("--device", o->device, "cpu, cuda or auto")->capture_default_str();
  cmd->add_option("--tau", o->tau,
                  "Routing temperature of the export's soft routes: checkpoint (tau at its step), min (routing.tau_min, "
                  "as the reference evaluates) or a number; default: the checkpoint config's eval.tau");
  cmd->callback([o] {
    const auto r = hf_export::export_task(*o, std::cerr);
    std::cout << "exported " << (r.routed ? o->task : std::string("the model")) << " to " << o->out.string()
              << (r.exact ? " (exact)" : " (approximate)");
    if (r.dev_measured)
      std::cout << "; dev log-likelihood per token " << r.dev_loglik_routed << " -> " << r.dev_loglik_export
                << " (change " << (r.dev_loglik_export - r.dev_loglik_routed) << ")";
    std::cout << "\n";
  });
}

}  // namespace tlmoe::app
