// The typed configuration tree of tlmoe.
//
// Every field is declared exactly once, in config_schema.cpp, with its key, default, help
// text and checks. That one declaration drives YAML parsing, --set overrides, validation,
// `tlmoe config show` and docs/config.md. The structs below only hold values: their
// defaults come from the schema (Config::defaults()), never from member initialisers.
//
// Modules never see YAML: commands load a Config at the boundary and pass typed values on.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace tlmoe {

struct DataConfig {
  std::string dir;                // CrossFit-layout root: {dir}/{task}/{task}_{k}_{seed}_{split}.tsv
  std::string splits;             // split json (all/train/dev/test); "" = {dir}/splits.json
  std::string tasks;              // tasks.json; "" = {dir}/tasks.json
  std::string ontology;           // ontology.json; "" = {dir}/ontology.json
  std::string cache_dir;          // preprocess output; "" = {dir}/.tlmoe-cache/{cache_variant}
  std::string upstream_source;    // kshot | full
  std::int64_t max_input_len;
  std::int64_t max_output_len;
  bool task_prefix;               // input text "[task] input" as the reference
  bool instruction;               // the task's instruction (tasks.json) before its input
};

struct TokenizerConfig {
  std::string kind;               // sentencepiece
  std::string model;              // .model path; "" = train one during preprocess
  std::int64_t vocab_size;
  std::string model_type;         // unigram | bpe
  double character_coverage;
  std::int64_t max_train_lines;
};

struct ModelConfig {
  std::int64_t d_model;
  std::int64_t encoder_layers;
  std::int64_t decoder_layers;
  std::int64_t heads;
  std::int64_t ffn_dim;
  std::int64_t experts;                              // m; 1 = vanilla
  std::vector<std::int64_t> vanilla_encoder_layers;  // shared (unrouted) encoder layers
  std::vector<std::int64_t> vanilla_decoder_layers;
  double dropout;
  double attention_dropout;
  double activation_dropout;
  std::int64_t max_positions;
  bool scale_embedding;
  double init_std;
  std::string init_from;          // "" | checkpoint dir | hf:/path
  double init_noise;
  double expert_reg;
  std::string decoder_start;      // eos | bos
};

struct RoutingConfig {
  std::string router;             // the reference's router types (model/router.h), or mlp | layer_mlp
  std::int64_t hidden;
  std::int64_t transformer_heads;  // transformer routers: attention heads
  std::int64_t transformer_ffn;    // ... and feed-forward width
  std::string selection;          // softmax | gumbel | gumbel_st | topk
  std::int64_t top_k;
  double tau0;
  double tau_min;
  double anneal_rate;
  std::string estimator;          // dense_st | sparse
  std::string baseline;           // none | average | task_random | instance_random
  std::int64_t random_n;
  double epsilon;
  std::string eval_routes;        // argmax | sample
  std::string init_from;          // checkpoint whose router and task table are loaded (stage 2)
  bool freeze;                    // keep the router fixed (stage 2)
};

struct TaskRepConfig {
  std::string kind;               // learned | textemb | ft_textemb | fisher
  std::string textemb_variant;    // encoder_mean | reference (textemb and ft_textemb)
  std::int64_t dim;
  std::string path;               // task-representation file; "" = {cache_dir}/taskrep.bin
  bool freeze;
  std::string source_checkpoint;  // encoder for textemb / backbone for fisher
  std::int64_t fisher_adapter_dim;
  std::int64_t fisher_steps;
  double fisher_lr;
  std::int64_t fisher_batch_size;
  std::int64_t ft_steps;          // ft_textemb: full fine-tuning per task
  double ft_lr;
  std::int64_t ft_batch_size;
  std::string ft_pool;            // mean | bos
};

struct TrainConfig {
  std::int64_t steps;
  std::int64_t batch_size;
  std::int64_t grad_accum;
  double lr;
  double router_lr;
  double task_lr;
  double weight_decay;
  double warmup_ratio;
  double clip_norm;
  double adam_beta1;
  double adam_beta2;
  double adam_eps;
  double label_smoothing;
  std::string loss_reduction;     // sum | mean
  std::string precision;          // auto | fp32 | bf16 (autocast)
  std::string task_sampling;      // examples | temperature
  double sampling_temperature;
  bool length_bucketing;
  std::int64_t eval_every;
  std::int64_t eval_from;
  std::int64_t save_every;
  std::string select_by;          // score | loss
  std::int64_t eval_max_examples; // per dev task, 0 = all
  bool diagnostics;               // decode the dev sets at every evaluation and check for collapse
  double collapse_threshold;      // share of one prediction above which a dev task has collapsed
  double plateau_tolerance;       // converged: the last half of training improved the best by less
  std::int64_t log_every;
  std::int64_t alternate_every;   // > 0: K steps backbone only, K steps router and task table only, ...
  bool tensorboard;               // also write TensorBoard event files ({run}/tensorboard/)
  bool tensorboard_images;        // ... with the route heatmap as an image at every evaluation
  std::int64_t seed;
};

struct AdaptConfig {
  std::vector<double> lrs;
  std::vector<std::int64_t> batch_sizes;
  std::int64_t steps;
  std::int64_t warmup_steps;
  std::int64_t eval_every;
  std::vector<std::int64_t> splits;  // k-shot seeds; empty = every split found
  std::string route;              // learned | average | random | new_embedding
  std::string mode;               // fixed | squeeze
  bool tensorboard;               // TensorBoard event files per grid point ({out}/tensorboard/)
  std::int64_t seed;
};

struct EvalConfig {
  std::string decoder_start;      // generation's first decoder token: train | eos | bos
  std::string tau;                // routing temperature of a saved checkpoint: checkpoint | min | a number
  std::int64_t num_beams;
  std::int64_t max_len;
  std::int64_t batch_size;
  double length_penalty;
  std::int64_t no_repeat_ngram;
  std::string pearson_fallback;   // nan | number
  std::string rouge_variant;      // 1.0.0 | 1.0.1
  std::int64_t min_len;
  bool forced_bos;
  bool forced_eos;
  bool early_stopping;
  std::string semantics;          // legacy | current: which transformers release to reproduce
};

struct AnalysisConfig {
  std::string ontology;           // "" = data.ontology
  std::string formats;            // png | svg | both
  std::int64_t permutations;
  std::int64_t seed;
};

// Multi-process training on torch.distributed c10d (docs/distributed.md).
struct DistConfig {
  std::string launcher;           // auto | torchrun | slurm | none
  std::string backend;            // auto | gloo | nccl
  double timeout_s;               // rendezvous and every collective
  std::string master_addr;        // "" = MASTER_ADDR
  std::int64_t master_port;       // 0 = MASTER_PORT, else 29500
  double bucket_mb;               // gradient all-reduce bucket size
  bool overlap;                   // start bucket all-reduces while backward runs
};

struct Config {
  std::string device;             // auto | cpu | cuda
  bool reference_compat;
  DataConfig data;
  TokenizerConfig tokenizer;
  ModelConfig model;
  RoutingConfig routing;
  TaskRepConfig task_rep;
  TrainConfig train;
  AdaptConfig adapt;
  EvalConfig eval;
  AnalysisConfig analysis;
  DistConfig dist;

  // The keys a config file (or its base files) or a --set override gave a value, whatever the
  // value. What a model brings (model.init_from: hf:DIR, a checkpoint given as hf:DIR) fills only
  // the other keys (docs/method.md §1.6).
  std::set<std::string> explicit_keys;
  bool is_explicit(const std::string& key) const { return explicit_keys.count(key) > 0; }
  // Where each explicit key got its value: "file:line" or "--set key=value".
  std::map<std::string, std::string> key_origin;
  // key_origin's entry, or "" for a key at its default (what a ConfigError's `where` takes).
  std::string origin(const std::string& key) const {
    auto it = key_origin.find(key);
    return it == key_origin.end() ? "" : it->second;
  }

  // Every field at its declared default.
  static Config defaults();
};

// Where each value may come from, lowest precedence first: defaults, `base:` files (the
// deepest first), the --config file, then --set overrides in order.
struct ConfigSources {
  std::string file;                   // "" = defaults only
  std::vector<std::string> overrides; // "section.key=value", YAML syntax for the value
};

// Loads, merges and validates. Throws ConfigError naming the file, line and key path.
Config load_config(const ConfigSources& sources);

// A resolved config saved as YAML text (e.g. in a checkpoint's meta.json); `source` names it in
// errors. No `base:` chain.
Config config_from_yaml_text(const std::string& yaml, const std::string& source);

// Cross-field checks (top_k <= experts, tau_min <= tau0, ...). Throws ConfigError.
void validate(const Config& cfg);

// The resolved config as YAML (every field, in declaration order, grouped by section).
std::string to_yaml(const Config& cfg);

// docs/config.md, generated from the field declarations.
std::string config_reference_markdown();

// All field keys, in declaration order ("device", "data.dir", ...).
std::vector<std::string> config_keys();

// Resolved paths derived from data.* ("" means "under data.dir").
std::string splits_path(const Config& cfg);
std::string tasks_path(const Config& cfg);
std::string ontology_path(const Config& cfg);
// The preprocess output: data.cache_dir, or {data.dir}/.tlmoe-cache/{cache_variant(cfg)}, so that
// runs whose tokenizers differ (another upstream_source, vocabulary size, ...) never share or
// rebuild each other's tokenizer, token caches and task representations.
std::string cache_dir(const Config& cfg);
// The tokenizer's identity in a directory name: spm-{upstream_source}-{vocab_size}-{hash of the other
// tokenizer options}, spm-given-{hash of tokenizer.model}, or bpe-{hash of the tokenizer directory}.
std::string cache_variant(const Config& cfg);

}  // namespace tlmoe
