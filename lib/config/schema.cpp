// Field declarations: the single source of truth for every config key.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <limits>
#include <sstream>

#include "common/error.h"
#include "config/schema.h"

namespace tlmoe::config_detail {

namespace {

// ---- per-type parsing and printing -----------------------------------------------------------

std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

template <class T>
struct TypeTraits;

template <>
struct TypeTraits<std::int64_t> {
  static const char* name() { return "int"; }
  static bool parse(const YAML::Node& n, std::int64_t& out) {
    if (!n.IsScalar()) return false;
    const std::string& s = n.Scalar();
    if (s.empty()) return false;
    std::size_t pos = 0;
    try {
      long long v = std::stoll(s, &pos, 10);
      if (pos != s.size()) return false;
      out = v;
      return true;
    } catch (...) {
      return false;
    }
  }
  static void emit(YAML::Emitter& e, std::int64_t v) { e << static_cast<long long>(v); }
  static std::string text(std::int64_t v) { return std::to_string(v); }
  static double number(std::int64_t v) { return static_cast<double>(v); }
};

std::string format_double(double v) {
  if (std::isnan(v)) return ".nan";
  std::ostringstream s;
  s.precision(10);
  s << v;
  std::string r = s.str();
  // Keep it a float for YAML readers: "1" -> "1.0".
  if (r.find_first_of(".eEn") == std::string::npos) r += ".0";
  return r;
}

template <>
struct TypeTraits<double> {
  static const char* name() { return "float"; }
  static bool parse(const YAML::Node& n, double& out) {
    if (!n.IsScalar()) return false;
    const std::string& s = n.Scalar();
    if (s.empty()) return false;
    std::size_t pos = 0;
    try {
      double v = std::stod(s, &pos);
      if (pos != s.size() || !std::isfinite(v)) return false;
      out = v;
      return true;
    } catch (...) {
      return false;
    }
  }
  static void emit(YAML::Emitter& e, double v) { e << format_double(v); }
  static std::string text(double v) { return format_double(v); }
  static double number(double v) { return v; }
};

template <>
struct TypeTraits<bool> {
  static const char* name() { return "bool"; }
  static bool parse(const YAML::Node& n, bool& out) {
    if (!n.IsScalar()) return false;
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return out = true, true;
    if (s == "false" || s == "False" || s == "FALSE") return out = false, true;
    return false;
  }
  static void emit(YAML::Emitter& e, bool v) { e << (v ? "true" : "false"); }
  static std::string text(bool v) { return v ? "true" : "false"; }
  static double number(bool v) { return v; }
};

template <>
struct TypeTraits<std::string> {
  static const char* name() { return "string"; }
  static bool parse(const YAML::Node& n, std::string& out) {
    if (!n.IsScalar()) return false;
    out = n.Scalar();
    return true;
  }
  static void emit(YAML::Emitter& e, const std::string& v) {
    e << YAML::DoubleQuoted << v;
  }
  static std::string text(const std::string& v) { return "\"" + v + "\""; }
  static double number(const std::string&) { return 0; }
};

template <class E>
struct TypeTraits<std::vector<E>> {
  static std::string name() { return std::string("list of ") + TypeTraits<E>::name(); }
  static bool parse(const YAML::Node& n, std::vector<E>& out) {
    if (!n.IsSequence()) return false;
    std::vector<E> v;
    for (const auto& item : n) {
      E x;
      if (!TypeTraits<E>::parse(item, x)) return false;
      v.push_back(x);
    }
    out = std::move(v);
    return true;
  }
  static void emit(YAML::Emitter& e, const std::vector<E>& v) {
    e << YAML::Flow << YAML::BeginSeq;
    for (const auto& x : v) TypeTraits<E>::emit(e, x);
    e << YAML::EndSeq;
  }
  static std::string text(const std::vector<E>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + TypeTraits<E>::text(v[i]);
    return s + "]";
  }
};

struct Check {
  std::optional<double> min, max;
  std::vector<std::string> choices;
};

Check range(double lo, double hi) { return Check{lo, hi, {}}; }
Check at_least(double lo) { return Check{lo, std::nullopt, {}}; }
Check one_of(std::vector<std::string> c) { return Check{std::nullopt, std::nullopt, std::move(c)}; }
const Check kAny{};

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

template <class T>
void check_value(const FieldSpec& f, const T& v, const std::string& where) {
  if constexpr (std::is_same_v<T, std::string>) {
    if (!f.choices.empty() &&
        std::find(f.choices.begin(), f.choices.end(), v) == f.choices.end())
      throw ConfigError(where, f.key,
                        "'" + v + "' is not one of: " + join(f.choices, ", "));
  } else if constexpr (std::is_arithmetic_v<T>) {
    double x = TypeTraits<T>::number(v);
    if (f.min && x < *f.min)
      throw ConfigError(where, f.key, "value " + TypeTraits<T>::text(v) + " is below the minimum " +
                                          format_double(*f.min));
    if (f.max && x > *f.max)
      throw ConfigError(where, f.key, "value " + TypeTraits<T>::text(v) + " is above the maximum " +
                                          format_double(*f.max));
  } else {
    for (const auto& x : v) check_value(f, x, where);
  }
}

class Declarer {
 public:
  explicit Declarer(std::vector<FieldSpec>& out) : out_(out) {}

  // `get` returns a reference to the field inside a Config.
  template <class T, class Get>
  void add(const std::string& key, Get get, T def, const std::string& used_by,
           const std::string& help, const Check& check = kAny) {
    FieldSpec f;
    f.key = key;
    f.type = TypeTraits<T>::name();
    if (!check.choices.empty()) f.type = "enum";
    f.help = help;
    f.default_text = TypeTraits<T>::text(def);
    f.choices = check.choices;
    f.min = check.min;
    f.max = check.max;
    f.used_by = used_by;
    FieldSpec spec_copy = f;  // for the closures (without closures, no cycles)
    f.parse = [get, spec_copy](Config& cfg, const YAML::Node& node, const std::string& where) {
      T value;
      if (!TypeTraits<T>::parse(node, value))
        throw ConfigError(where, spec_copy.key,
                          "expected " + spec_copy.type +
                              (spec_copy.choices.empty() ? "" : " (" + join(spec_copy.choices, ", ") + ")") +
                              ", got " + describe(node));
      check_value(spec_copy, value, where);
      get(cfg) = value;
    };
    f.emit = [get](const Config& cfg, YAML::Emitter& e) {
      TypeTraits<T>::emit(e, get(const_cast<Config&>(cfg)));
    };
    f.set_default = [get, def](Config& cfg) { get(cfg) = def; };
    out_.push_back(std::move(f));
  }

 private:
  std::vector<FieldSpec>& out_;
};

using I = std::int64_t;
using S = std::string;
using VD = std::vector<double>;
using VI = std::vector<std::int64_t>;

#define TLMOE_GET(member) [](Config& c) -> auto& { return c.member; }

// Which commands read a key (the "used by" column of docs/config.md).
const S all = "all";
const S pre = "preprocess, train, adapt, eval";
const S trn = "train";
const S mdl = "train, adapt, eval, analyze-routes";

// The device, reference_compat, data and tokenizer sections.
void declare_data(Declarer& d) {
  // ---- top level ----
  d.add<S>("device", TLMOE_GET(device), "auto", all, "Where tensors live: auto picks cuda when a GPU is present.",
           one_of({"auto", "cpu", "cuda"}));
  d.add<bool>("reference_compat", TLMOE_GET(reference_compat), false, mdl,
              "Reproduce the reference code's behaviour where tlmoe deliberately differs (docs/method.md §13.22).");

  // ---- data ----
  d.add<S>("data.dir", TLMOE_GET(data.dir), "gym", pre,
           "Root of the CrossFit-layout data: {dir}/{task}/{task}_{k}_{seed}_{train|dev|test}.tsv. Relative paths are relative to the working directory.");
  d.add<S>("data.splits", TLMOE_GET(data.splits), "", pre,
           "Task partition json (CrossFit random.json format: all/train/dev/test). Empty: {data.dir}/splits.json.");
  d.add<S>("data.tasks", TLMOE_GET(data.tasks), "", pre,
           "Per-task metadata json (category, metric, labels, instruction). Empty: {data.dir}/tasks.json.");
  d.add<S>("data.ontology", TLMOE_GET(data.ontology), "", "analyze-routes",
           "Ontology json (category -> sub-category -> tasks). Empty: {data.dir}/ontology.json.");
  d.add<S>("data.cache_dir", TLMOE_GET(data.cache_dir), "", pre,
           "Where preprocess writes the tokenizer, token caches and task representations. Empty: {data.dir}/.tlmoe-cache/{variant}, one per tokenizer (spm-{upstream_source}-{vocab_size}-{hash of the other tokenizer options}), so runs with other tokenizers never rebuild each other's.");
  d.add<S>("data.upstream_source", TLMOE_GET(data.upstream_source), "kshot", pre,
           "Upstream training examples: 'kshot' = the union of every k-shot train file (the TL-MoE reference); 'kshot_train_dev' = train and dev files (CrossFit's multi-task baseline); 'full' = {task}_full_train.tsv files (the embedded gym ships them).",
           one_of({"kshot", "kshot_train_dev", "full"}));
  d.add<I>("data.max_input_len", TLMOE_GET(data.max_input_len), 512, pre,
           "Maximum input length in tokens, <s> and </s> included; longer inputs are truncated.", range(4, 1 << 20));
  d.add<I>("data.max_output_len", TLMOE_GET(data.max_output_len), 64, pre,
           "Maximum target length in tokens, <s> and </s> included.", range(4, 1 << 20));
  d.add<bool>("data.task_prefix", TLMOE_GET(data.task_prefix), true, pre,
              "Prefix every input with '[task] ' as the reference does.");
  d.add<bool>("data.instruction", TLMOE_GET(data.instruction), false, pre,
              "Put each task's instruction (tasks.json) before its input, after the [task] prefix: ' [task] {instruction} {input}'. Tasks without an instruction keep their input. With it, a classification task whose instruction names its label words can be answered zero-shot (docs/data.md).");

  // ---- tokenizer ----
  d.add<S>("tokenizer.kind", TLMOE_GET(tokenizer.kind), "sentencepiece", pre,
           "Tokenizer implementation: sentencepiece (trained by preprocess or loaded) or bart-bpe (BART's byte-level BPE from a Hugging Face directory's tokenizer.json, or vocab.json + merges.txt, identical to transformers' BartTokenizer). Unset, model.init_from: hf:DIR (or eval/adapt --checkpoint hf:DIR) selects bart-bpe.",
           one_of({"sentencepiece", "bart-bpe"}));
  d.add<S>("tokenizer.model", TLMOE_GET(tokenizer.model), "", pre,
           "sentencepiece: model file; empty = preprocess trains one on the upstream tasks' text into {cache_dir}/tokenizer/spm.model. bart-bpe: directory holding tokenizer.json (as transformers 5.x saves it) or vocab.json + merges.txt; empty = the directory of model.init_from: hf:DIR (or of --checkpoint hf:DIR).");
  d.add<I>("tokenizer.vocab_size", TLMOE_GET(tokenizer.vocab_size), 8000, pre,
           "Vocabulary size when training a tokenizer (special tokens included).", range(16, 1 << 20));
  d.add<S>("tokenizer.model_type", TLMOE_GET(tokenizer.model_type), "unigram", pre,
           "SentencePiece algorithm when training.", one_of({"unigram", "bpe"}));
  d.add<double>("tokenizer.character_coverage", TLMOE_GET(tokenizer.character_coverage), 1.0, pre,
                "SentencePiece character coverage when training.", range(0.9, 1.0));
  d.add<I>("tokenizer.max_train_lines", TLMOE_GET(tokenizer.max_train_lines), 200000, pre,
           "At most this many text lines (inputs and outputs) are used to train the tokenizer.", range(1, 1e9));
}

// The model and routing sections.
void declare_model(Declarer& d) {
  // ---- model ----
  d.add<I>("model.d_model", TLMOE_GET(model.d_model), 768, mdl, "Hidden size D.", range(8, 65536));
  d.add<I>("model.encoder_layers", TLMOE_GET(model.encoder_layers), 6, mdl, "Encoder layers.", range(1, 128));
  d.add<I>("model.decoder_layers", TLMOE_GET(model.decoder_layers), 6, mdl, "Decoder layers.", range(1, 128));
  d.add<I>("model.heads", TLMOE_GET(model.heads), 12, mdl, "Attention heads (must divide d_model).", range(1, 1024));
  d.add<I>("model.ffn_dim", TLMOE_GET(model.ffn_dim), 3072, mdl, "Feed-forward inner size F.", range(1, 1 << 20));
  d.add<I>("model.experts", TLMOE_GET(model.experts), 3, mdl,
           "Experts m per routed layer; each expert is a complete transformer layer. 1 = the vanilla model.", range(1, 64));
  d.add<VI>("model.vanilla_encoder_layers", TLMOE_GET(model.vanilla_encoder_layers), {}, mdl,
            "Encoder layer indices (0-based) that stay a single shared layer, without routing.", at_least(0));
  d.add<VI>("model.vanilla_decoder_layers", TLMOE_GET(model.vanilla_decoder_layers), {}, mdl,
            "Decoder layer indices (0-based) that stay a single shared layer, without routing.", at_least(0));
  d.add<double>("model.dropout", TLMOE_GET(model.dropout), 0.1, mdl, "Dropout on embeddings and layer outputs.", range(0, 1));
  d.add<double>("model.attention_dropout", TLMOE_GET(model.attention_dropout), 0.1, mdl, "Dropout on attention probabilities.", range(0, 1));
  d.add<double>("model.activation_dropout", TLMOE_GET(model.activation_dropout), 0.1, mdl, "Dropout after the FFN activation.", range(0, 1));
  d.add<I>("model.max_positions", TLMOE_GET(model.max_positions), 1024, mdl,
           "Rows of the learned position tables (BART adds an offset of 2).", range(8, 1 << 20));
  d.add<bool>("model.scale_embedding", TLMOE_GET(model.scale_embedding), false, mdl, "Scale token embeddings by sqrt(d_model).");
  d.add<double>("model.init_std", TLMOE_GET(model.init_std), 0.02, mdl, "Std of the normal initialisation of Linear and Embedding weights (BART: 0.02 for d_model 768; models trained from scratch at small d_model need about 1/sqrt(d_model).", range(0, 10));
  d.add<S>("model.init_from", TLMOE_GET(model.init_from), "", mdl,
           "Initialise from a tlmoe checkpoint directory or a Hugging Face BART directory ('hf:/path'); empty = random.");
  d.add<double>("model.init_noise", TLMOE_GET(model.init_noise), 1e-8, mdl,
                "Std of the Gaussian noise added to each expert copy when experts are initialised from a dense layer.", range(0, 10));
  d.add<double>("model.expert_reg", TLMOE_GET(model.expert_reg), 0.0, trn,
                "Weight of the expert-difference regulariser (mean pairwise parameter distance per layer).", at_least(0));
  d.add<S>("model.decoder_start", TLMOE_GET(model.decoder_start), "eos", mdl,
           "Decoder start token when training (the reference shifts with </s>).", one_of({"eos", "bos"}));

  // ---- routing ----
  d.add<S>("routing.router", TLMOE_GET(routing.router), "linear_layer_specific", mdl,
           "Router network, the reference's ten types (docs/method.md §2): linear (one MLP for all layers), linear_layer_specific (one MLP per layer), rnn/gru/lstm and transformer (over the layers: the task vector plus a layer-position embedding), rnn_layer_specific/gru_layer_specific/lstm_layer_specific and transformer_layer_specific (over one projected vector per layer). Aliases: mlp = linear, layer_mlp = linear_layer_specific.",
           one_of({"linear", "rnn", "lstm", "gru", "transformer", "rnn_layer_specific", "lstm_layer_specific",
                   "gru_layer_specific", "transformer_layer_specific", "linear_layer_specific", "mlp", "layer_mlp"}));
  d.add<I>("routing.hidden", TLMOE_GET(routing.hidden), 64, mdl, "Router hidden size.", range(1, 65536));
  d.add<I>("routing.transformer_heads", TLMOE_GET(routing.transformer_heads), 4, mdl,
           "Attention heads of the transformer routers (the reference: 4); must divide their width (task_rep.dim for transformer, routing.hidden for transformer_layer_specific).",
           range(1, 1024));
  d.add<I>("routing.transformer_ffn", TLMOE_GET(routing.transformer_ffn), 64, mdl,
           "Feed-forward width of the transformer routers (the reference: 64).", range(1, 1 << 20));
  d.add<S>("routing.selection", TLMOE_GET(routing.selection), "gumbel_st", mdl,
           "Selection function on router logits.", one_of({"softmax", "gumbel", "gumbel_st", "topk"}));
  d.add<I>("routing.top_k", TLMOE_GET(routing.top_k), 1, mdl, "Experts kept by topk selection (<= model.experts).", range(1, 64));
  d.add<double>("routing.tau0", TLMOE_GET(routing.tau0), 2.0, trn, "Initial temperature.", Check{1e-6, std::nullopt, {}});
  d.add<double>("routing.tau_min", TLMOE_GET(routing.tau_min), 0.1, mdl, "Temperature floor (also the evaluation temperature).", Check{1e-6, std::nullopt, {}});
  d.add<double>("routing.anneal_rate", TLMOE_GET(routing.anneal_rate), 3e-4, trn,
                "r in tau(t) = max(tau0 * exp(-r t), tau_min), t = optimizer steps done.", at_least(0));
  d.add<S>("routing.estimator", TLMOE_GET(routing.estimator), "dense_st", trn,
           "Router gradient: dense_st runs every expert (the paper); sparse runs only selected experts.", one_of({"dense_st", "sparse"}));
  d.add<S>("routing.baseline", TLMOE_GET(routing.baseline), "none", mdl,
           "Routing baseline instead of the learned router.", one_of({"none", "average", "task_random", "instance_random"}));
  d.add<I>("routing.random_n", TLMOE_GET(routing.random_n), 1, mdl, "Experts per layer chosen by the task_random baseline.", range(1, 64));
  d.add<double>("routing.epsilon", TLMOE_GET(routing.epsilon), 0.0, trn,
                "Exploration: probability of replacing a (layer, example) route by a random one-hot while training.", range(0, 1));
  d.add<S>("routing.eval_routes", TLMOE_GET(routing.eval_routes), "argmax", mdl,
           "Evaluation routes in gumbel modes: argmax (deterministic) or sample (the reference).", one_of({"argmax", "sample"}));
  d.add<S>("routing.init_from", TLMOE_GET(routing.init_from), "", trn,
           "Checkpoint directory whose router and task table initialise this run (stage 2 of the paper's two-stage training). Empty: fresh router.");
  d.add<bool>("routing.freeze", TLMOE_GET(routing.freeze), false, trn,
           "Keep the router's parameters fixed during training (stage 2).");
}

// The task representation and train sections.
void declare_training(Declarer& d) {
  // ---- task representations ----
  d.add<S>("task_rep.kind", TLMOE_GET(task_rep.kind), "learned", mdl,
           "Router input per task: learned table, textemb (mean encoder states), ft_textemb (textemb of a copy fine-tuned on the task), fisher (adapter Fisher + PCA).",
           one_of({"learned", "textemb", "ft_textemb", "fisher"}));
  d.add<S>("task_rep.textemb_variant", TLMOE_GET(task_rep.textemb_variant), "encoder_mean", "preprocess",
           "textemb and ft_textemb: encoder_mean = the encoder's states averaged over real tokens of every example (tlmoe); reference = the reference's recipe (the default with reference_compat): textemb averages the decoder's states on the shifted input over every position of batches of 8, pads included; ft_textemb reads only the first example of each batch of 8 (docs/method.md §13.14).",
           one_of({"encoder_mean", "reference"}));
  d.add<I>("task_rep.dim", TLMOE_GET(task_rep.dim), 768, mdl, "Task representation size d_in.", range(1, 1 << 20));
  d.add<S>("task_rep.path", TLMOE_GET(task_rep.path), "", mdl,
           "Task-representation file written by preprocess. Empty: {cache_dir}/taskrep/<kind>.safetensors.");
  d.add<bool>("task_rep.freeze", TLMOE_GET(task_rep.freeze), false, trn, "Keep the task table fixed during training.");
  d.add<S>("task_rep.source_checkpoint", TLMOE_GET(task_rep.source_checkpoint), "", "preprocess",
           "Checkpoint whose encoder computes textemb/fisher representations.");
  d.add<I>("task_rep.fisher_adapter_dim", TLMOE_GET(task_rep.fisher_adapter_dim), 8, "preprocess", "Adapter bottleneck for fisher.", range(1, 4096));
  d.add<I>("task_rep.fisher_steps", TLMOE_GET(task_rep.fisher_steps), 2500, "preprocess", "Adapter training steps for fisher.", range(0, 1e9));
  d.add<double>("task_rep.fisher_lr", TLMOE_GET(task_rep.fisher_lr), 3e-5, "preprocess",
                "Adapter learning rate for fisher (the paper: 3e-5 on BART-base).", range(0.0, 1.0));
  d.add<I>("task_rep.fisher_batch_size", TLMOE_GET(task_rep.fisher_batch_size), 8, "preprocess",
           "Adapter training batch size for fisher.", range(1, 1 << 16));
  d.add<I>("task_rep.ft_steps", TLMOE_GET(task_rep.ft_steps), 2500, "preprocess",
           "ft_textemb: fine-tuning steps of the whole source model on each task's first k-shot split.", range(0, 1e9));
  d.add<double>("task_rep.ft_lr", TLMOE_GET(task_rep.ft_lr), 3e-5, "preprocess",
                "ft_textemb: fine-tuning learning rate (the paper: 3e-5 on BART-base).", range(0.0, 1.0));
  d.add<I>("task_rep.ft_batch_size", TLMOE_GET(task_rep.ft_batch_size), 8, "preprocess",
           "ft_textemb: fine-tuning batch size.", range(1, 1 << 16));
  d.add<S>("task_rep.ft_pool", TLMOE_GET(task_rep.ft_pool), "mean", "preprocess",
           "ft_textemb: the fine-tuned encoder's states averaged over the input (mean; the reference: without its first and last position) or read at the first position (bos).",
           one_of({"mean", "bos"}));

  // ---- train ----
  d.add<I>("train.steps", TLMOE_GET(train.steps), 30000, trn, "Optimizer steps.", range(1, 1e12));
  d.add<I>("train.batch_size", TLMOE_GET(train.batch_size), 16, trn, "Examples per forward pass.", range(1, 1 << 20));
  d.add<I>("train.grad_accum", TLMOE_GET(train.grad_accum), 2, trn, "Forward passes per optimizer step.", range(1, 1 << 20));
  d.add<double>("train.lr", TLMOE_GET(train.lr), 1e-5, trn, "Learning rate of experts and backbone.", at_least(0));
  d.add<double>("train.router_lr", TLMOE_GET(train.router_lr), 1e-3, trn, "Learning rate of the router.", at_least(0));
  d.add<double>("train.task_lr", TLMOE_GET(train.task_lr), 1e-2, trn, "Learning rate of the task table.", at_least(0));
  d.add<double>("train.weight_decay", TLMOE_GET(train.weight_decay), 0.01, trn, "Decoupled weight decay (not on biases and LayerNorms).", at_least(0));
  d.add<double>("train.warmup_ratio", TLMOE_GET(train.warmup_ratio), 0.06, trn, "Linear warmup as a fraction of train.steps.", range(0, 1));
  d.add<double>("train.clip_norm", TLMOE_GET(train.clip_norm), 0.1, trn, "Global gradient-norm clip (0 = off).", at_least(0));
  d.add<double>("train.adam_beta1", TLMOE_GET(train.adam_beta1), 0.9, trn, "AdamW beta1.", range(0, 0.999999));
  d.add<double>("train.adam_beta2", TLMOE_GET(train.adam_beta2), 0.999, trn, "AdamW beta2.", range(0, 0.999999999));
  d.add<double>("train.adam_eps", TLMOE_GET(train.adam_eps), 1e-8, trn, "AdamW epsilon.", Check{0, 1, {}});
  d.add<double>("train.label_smoothing", TLMOE_GET(train.label_smoothing), 0.1, "train, adapt", "Label smoothing epsilon.", range(0, 1));
  d.add<S>("train.loss_reduction", TLMOE_GET(train.loss_reduction), "sum", "train, adapt",
           "Loss over target tokens: sum (the reference) or mean.", one_of({"sum", "mean"}));
  d.add<S>("train.precision", TLMOE_GET(train.precision), "auto", "train, adapt",
           "Training forward passes: fp32, or bf16 autocast (fp32 master weights and optimizer state, loss in fp32); auto = bf16 on CUDA, fp32 on CPU.",
           one_of({"auto", "fp32", "bf16"}));
  d.add<S>("train.task_sampling", TLMOE_GET(train.task_sampling), "examples", trn,
           "Batch composition: examples (uniform over all examples, the paper) or temperature (task-level sampling).",
           one_of({"examples", "temperature"}));
  d.add<double>("train.sampling_temperature", TLMOE_GET(train.sampling_temperature), 1.0, trn,
                "T in p(task) ∝ n_task^(1/T) when task_sampling = temperature.", Check{1e-3, 1e3, {}});
  d.add<bool>("train.length_bucketing", TLMOE_GET(train.length_bucketing), true, trn, "Group examples of similar length into batches.");
  d.add<I>("train.eval_every", TLMOE_GET(train.eval_every), 750, trn, "Evaluate on the dev tasks every N optimizer steps (0 = only at the end).", range(0, 1e12));
  d.add<I>("train.eval_from", TLMOE_GET(train.eval_from), 0, trn, "No evaluation before this step.", range(0, 1e12));
  d.add<I>("train.save_every", TLMOE_GET(train.save_every), 0, trn, "Also keep a checkpoint every N steps (0 = only best and last).", range(0, 1e12));
  d.add<S>("train.select_by", TLMOE_GET(train.select_by), "score", trn,
           "Best checkpoint by the generation-based dev score (mean of the dev tasks' metrics, as the paper) or by teacher-forced dev loss.",
           one_of({"score", "loss"}));
  d.add<I>("train.eval_max_examples", TLMOE_GET(train.eval_max_examples), 0, trn,
           "Dev examples per task decoded for the dev score (the first N of each task's dev file; 0 = all).", range(0, 1e12));
  d.add<bool>("train.diagnostics", TLMOE_GET(train.diagnostics), true, trn,
              "Decode the dev tasks at every evaluation (also with select_by = loss) and report prediction collapse and convergence (docs/train.md, Training health).");
  d.add<double>("train.collapse_threshold", TLMOE_GET(train.collapse_threshold), 0.8, trn,
                "A dev task has collapsed when more than this share of its predictions is one answer while its gold answers are not.",
                Check{0.0, 1.0, {}});
  d.add<double>("train.plateau_tolerance", TLMOE_GET(train.plateau_tolerance), 0.05, trn,
                "A run has converged when the best dev score (or loss) of the last half of training improves on the first half's best by less than this share.",
                Check{0.0, 10.0, {}});
  d.add<I>("train.log_every", TLMOE_GET(train.log_every), 10, trn, "Write a metrics.jsonl line every N steps.", range(1, 1e12));
  d.add<I>("train.alternate_every", TLMOE_GET(train.alternate_every), 0, trn,
           "Alternating updates (the reference's --alternate_every K): steps 1..K-1 update the router and task table with the backbone held, the next K steps the backbone with the router and task table held, and so on (step s holds the router when floor(s/K) is odd). Held parameters do not move (with reference_compat their gradients are zeroed as the reference does, so AdamW's momentum and weight decay still move them). 0 = off.",
           range(0, 1e12));
  d.add<bool>("train.tensorboard", TLMOE_GET(train.tensorboard), true, trn,
              "Also write TensorBoard event files in {run}/tensorboard/: every metrics.jsonl value as a scalar (loss, lr, tau, throughput, route entropy per layer, dev loss and score, per dev task) (docs/tensorboard.md).");
  d.add<bool>("train.tensorboard_images", TLMOE_GET(train.tensorboard_images), true, trn,
              "With train.tensorboard, a routed model's route heatmap (tasks x experts of every layer) as an image at every evaluation.");
  d.add<I>("train.seed", TLMOE_GET(train.seed), 42, trn, "Random seed of initialisation, data order, dropout and gumbel noise.", range(0, 4294967295.0));
}

// The adapt, eval, analysis and dist sections.
void declare_evaluation(Declarer& d) {
  // ---- adapt ----
  d.add<VD>("adapt.lrs", TLMOE_GET(adapt.lrs), {1e-5, 2e-5, 5e-5}, "adapt", "Learning-rate grid.", at_least(0));
  d.add<VI>("adapt.batch_sizes", TLMOE_GET(adapt.batch_sizes), {2, 4, 8}, "adapt", "Batch-size grid.", range(1, 1 << 20));
  d.add<I>("adapt.steps", TLMOE_GET(adapt.steps), 1000, "adapt", "Fine-tuning steps per grid point.", range(1, 1e12));
  d.add<I>("adapt.warmup_steps", TLMOE_GET(adapt.warmup_steps), 100, "adapt", "Linear warmup steps.", range(0, 1e12));
  d.add<I>("adapt.eval_every", TLMOE_GET(adapt.eval_every), 100, "adapt", "Dev evaluation period (steps).", range(1, 1e12));
  d.add<VI>("adapt.splits", TLMOE_GET(adapt.splits), {}, "adapt", "k-shot split seeds to run; empty = every split found.", at_least(0));
  d.add<S>("adapt.route", TLMOE_GET(adapt.route), "learned", "adapt",
           "Route of the unseen task: from its representation (learned), uniform (average), random, or a new learned embedding.",
           one_of({"learned", "average", "random", "new_embedding"}));
  d.add<S>("adapt.mode", TLMOE_GET(adapt.mode), "fixed", "adapt",
           "fixed: fine-tune the MoE with the route fixed; squeeze: build a dense model from the routed experts (hard routes).",
           one_of({"fixed", "squeeze"}));
  d.add<bool>("adapt.tensorboard", TLMOE_GET(adapt.tensorboard), true, "adapt",
              "Also write TensorBoard event files, one run per grid point in {out}/tensorboard/{task}/{split}_lr{lr}_bs{batch_size}/: training loss and lr per step, dev score per evaluation, the test score (docs/tensorboard.md).");
  d.add<I>("adapt.seed", TLMOE_GET(adapt.seed), 42, "adapt", "Random seed, set once for the whole sweep.", range(0, 4294967295.0));

  // ---- eval ----
  d.add<I>("eval.num_beams", TLMOE_GET(eval.num_beams), 4, "train, adapt, eval", "Beam size (1 = greedy).", range(1, 256));
  d.add<I>("eval.max_len", TLMOE_GET(eval.max_len), 64, "train, adapt, eval", "Maximum decoder length in tokens, the start token included (Hugging Face max_length).", range(2, 1 << 20));
  d.add<I>("eval.batch_size", TLMOE_GET(eval.batch_size), 64, "train, adapt, eval", "Examples per generation batch.", range(1, 1 << 20));
  d.add<double>("eval.length_penalty", TLMOE_GET(eval.length_penalty), 1.0, "train, adapt, eval", "Beam score = sum log p / length^penalty.");
  d.add<I>("eval.no_repeat_ngram", TLMOE_GET(eval.no_repeat_ngram), 0, "train, adapt, eval", "Forbid repeating n-grams of this size (0 = off).", range(0, 1024));
  d.add<I>("eval.min_len", TLMOE_GET(eval.min_len), 0, "train, adapt, eval", "EOS is forbidden below this decoder length (0 = off).", range(0, 1 << 20));
  d.add<bool>("eval.forced_bos", TLMOE_GET(eval.forced_bos), false, "train, adapt, eval",
              "Force <s> as the first generated token (BART's forced_bos_token_id).");
  d.add<bool>("eval.forced_eos", TLMOE_GET(eval.forced_eos), false, "train, adapt, eval",
              "Force </s> at the last position max_len - 1 (BART's forced_eos_token_id).");
  d.add<bool>("eval.early_stopping", TLMOE_GET(eval.early_stopping), false, "train, adapt, eval",
              "Beam search stops an example as soon as it has num_beams finished hypotheses.");
  d.add<S>("eval.semantics", TLMOE_GET(eval.semantics), "legacy", "train, adapt, eval",
           "Which transformers release generation and decoding reproduce. legacy = 4.x, what CrossFit and the paper ran: BeamSearchScorer's beam search, and a BART tokenizer cleans up spaces before punctuation unless its tokenizer_config.json says otherwise. current = 5.x: the vectorised beam search (early-stop check on the best running beam, length limit scored by generated length) and 5.x's decoding. Unset, a Hugging Face model (hf:DIR, or a run trained from one) uses current. Formerly eval.beam_search (still accepted).",
           one_of({"legacy", "current"}));
  d.add<S>("eval.decoder_start", TLMOE_GET(eval.decoder_start), "train", "train, adapt, eval",
           "First decoder token of generation: train = model.decoder_start, the token training shifted with; eos or bos. With reference_compat (and this key unset) bos, as the reference generates from <s> after training with </s> (docs/method.md §13.11).",
           one_of({"train", "eos", "bos"}));
  d.add<S>("eval.tau", TLMOE_GET(eval.tau), "checkpoint", "adapt, eval, analyze-routes, export",
           "Routing temperature a saved checkpoint is evaluated at (matters for softmax routes): checkpoint = tau at its step, as it was evaluated while training; min = routing.tau_min, as the reference evaluates best/ (the reference_compat default); or a positive number (docs/method.md §3.3).");
  d.add<S>("eval.pearson_fallback", TLMOE_GET(eval.pearson_fallback), "nan", "train, adapt, eval",
           "Value for unparsable predictions in Pearson tasks: nan (CrossFit) or a number such as 3.0 (the TL-MoE code).");
  d.add<S>("eval.rouge_variant", TLMOE_GET(eval.rouge_variant), "1.0.0", "train, adapt, eval",
           "ROUGE-L semantics of the rouge package version.", one_of({"1.0.0", "1.0.1"}));

  // ---- analysis ----
  d.add<S>("analysis.ontology", TLMOE_GET(analysis.ontology), "", "analyze-routes", "Ontology for grouping tasks. Empty: data.ontology.");
  d.add<S>("analysis.formats", TLMOE_GET(analysis.formats), "both", "analyze-routes", "Figure formats.", one_of({"png", "svg", "both"}));
  d.add<I>("analysis.permutations", TLMOE_GET(analysis.permutations), 10000, "analyze-routes", "Permutations of the permutation tests.", range(1, 1e9));
  d.add<I>("analysis.seed", TLMOE_GET(analysis.seed), 42, "analyze-routes", "Seed of the permutation tests.", range(0, 4294967295.0));

  // ---- dist ----
  const S dst = "train, adapt";
  d.add<S>("dist.launcher", TLMOE_GET(dist.launcher), "auto", dst,
           "Where rank and world size come from: torchrun's RANK/WORLD_SIZE, Slurm's SLURM_PROCID/SLURM_NTASKS, "
           "auto (torchrun's variables, else Slurm's when SLURM_NTASKS > 1), or none (one process).",
           one_of({"auto", "torchrun", "slurm", "none"}));
  d.add<S>("dist.backend", TLMOE_GET(dist.backend), "auto", dst,
           "c10d backend: auto (NCCL for CUDA when the build has it, else Gloo), gloo or nccl.",
           one_of({"auto", "gloo", "nccl"}));
  d.add<double>("dist.timeout_s", TLMOE_GET(dist.timeout_s), 300.0, dst,
                "Seconds the rendezvous and each collective wait for the other ranks before this rank stops with an error.",
                range(0.1, 1e7));
  d.add<S>("dist.master_addr", TLMOE_GET(dist.master_addr), "", dst,
           "Address of rank 0's TCPStore. Empty: the MASTER_ADDR environment variable.");
  d.add<I>("dist.master_port", TLMOE_GET(dist.master_port), 0, dst,
           "Port of rank 0's TCPStore. 0: the MASTER_PORT environment variable, else 29500.", range(0, 65535));
  d.add<double>("dist.bucket_mb", TLMOE_GET(dist.bucket_mb), 25.0, "train",
                "Gradients are summed over the ranks in flat buckets of at most this many MiB, filled in reverse "
                "parameter order (the order backward produces them).",
                range(0.01, 1e5));
  d.add<bool>("dist.overlap", TLMOE_GET(dist.overlap), true, "train",
              "Start a bucket's all-reduce as soon as backward has produced all of its gradients (in bucket order on "
              "every rank) instead of after backward; false: every bucket after backward.");
}

std::vector<FieldSpec> declare() {
  std::vector<FieldSpec> v;
  Declarer d(v);
  declare_data(d);
  declare_model(d);
  declare_training(d);
  declare_evaluation(d);
  return v;
}

#undef TLMOE_GET

}  // namespace

const std::vector<FieldSpec>& fields() {
  static const std::vector<FieldSpec> v = declare();
  return v;
}

const std::vector<SectionSpec>& sections() {
  static const std::vector<SectionSpec> v = {
      {"data", "Where the CrossFit-layout data is and how it is read."},
      {"tokenizer", "The tokenizer: SentencePiece trained by preprocess, or loaded."},
      {"model", "The BART-style encoder-decoder and its experts."},
      {"routing", "Routers, selection functions, temperatures and routing baselines."},
      {"task_rep", "Task representations fed to the router."},
      {"train", "Upstream multi-task training."},
      {"adapt", "Few-shot adaptation on unseen tasks (CrossFit protocol)."},
      {"eval", "Generation and metrics."},
      {"analysis", "Routing analysis."},
      {"dist", "Multi-process training on torch.distributed (torchrun or Slurm)."},
  };
  return v;
}

const FieldSpec* find_field(const std::string& key) {
  for (const auto& f : fields())
    if (f.key == key) return &f;
  return nullptr;
}

}  // namespace tlmoe::config_detail
