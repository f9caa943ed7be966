#include "adapt/adapt.h"

#include "adapt/sweep.h"

#include <iostream>

#include "model/hf_defaults.h"
#include "train/model_init.h"

namespace tlmoe::adapt {

model::TLMoEModel squeeze_to_dense(model::TLMoEModel& src, const std::vector<int64_t>& expert_of_layer,
                                   const Config& mcfg) {
  Config dcfg = mcfg;
  dcfg.model.experts = 1;
  const auto& so = src->options();
  model::TLMoEModel dense(model::model_options(dcfg, so.vocab_size, so.pad_id), model::router_options(dcfg),
                          model::routing_policy(dcfg), src->num_tasks());
  auto from = src->named_parameters(true);
  auto from_b = src->named_buffers(true);
  torch::NoGradGuard g;
  auto source_name = [&](const std::string& name) {
    // model.{encoder,decoder}.layers.{i}.X  ->  model.{...}.layers.{i}.experts.{e}.X when layer i is routed
    for (const char* stack : {"model.encoder.layers.", "model.decoder.layers."}) {
      const std::string pre = stack;
      if (name.rfind(pre, 0) != 0) continue;
      const size_t dot = name.find('.', pre.size());
      const int64_t i = std::stoll(name.substr(pre.size(), dot - pre.size()));
      const bool dec = pre[6] == 'd';
      const bool routed = dec ? src->model->decoder->is_routed(i) : src->model->encoder->is_routed(i);
      if (!routed) return name;
      const int64_t l = dec ? so.encoder_layers + i : i;
      return pre + std::to_string(i) + ".experts." + std::to_string(expert_of_layer[l]) + name.substr(dot);
    }
    return name;
  };
  for (auto& p : dense->named_parameters(true)) {
    if (p.key().rfind("model.", 0) != 0) continue;
    const auto* s = from.find(source_name(p.key()));
    if (!s) throw std::logic_error("squeeze: no source tensor for " + p.key());
    p.value().copy_(*s);
  }
  for (auto& b : dense->named_buffers(true))
    if (const auto* s = from_b.find(b.key())) b.value().copy_(*s);
  dense->to(src->final_logits_bias.device());
  return dense;
}

AdaptResult adapt(const AdaptOptions& opts) {
  // What the starting model brings (a Hugging Face directory or a run trained from one): its
  // architecture, tokenizer and decoding settings for every key the config leaves unset.
  AdaptOptions o = opts;
  std::ostream quiet(nullptr);
  std::ostream& log = o.launch.rank > 0 ? quiet : o.log ? *o.log : std::cerr;
  if (!o.checkpoint.empty()) model::adopt_checkpoint_defaults(o.cfg, o.checkpoint, log);
  else train::adopt_start_model(o.cfg, log);
  log << "adapt: decoding with " << model::describe_generation(o.cfg) << "\n";
  detail::Sweep sweep(o);
  return sweep.run();
}

}  // namespace tlmoe::adapt
