#!/usr/bin/env bash
# Regenerates the seed corpora fuzz/seeds/<target> from real inputs (docs/fuzzing.md):
#   tsv              the embedded gym's TSV files (`tlmoe gym`), cut to their first lines
#   config           the first 29 configs/**/*.yaml and a resolved config (`tlmoe config show`, what a checkpoint keeps)
#   task_meta        the gym's splits.json, tasks.json, ontology.json and data/crossfit/*.json (tasks cut)
#   token_cache      .tok caches that `tlmoe preprocess` writes for a gym cut to 3 lines per file
#   safetensors      model.safetensors / optimizer.safetensors of a tiny `tlmoe train` run, reduced
#                    to a few small tensors (the header and bytes as written, other tensors dropped)
#   checkpoint_meta  that run's meta.json files
#   bpe              gym inputs and outputs, one per seed
#   bpe_load         tokenizer.json written by Hugging Face `tokenizers` (the virtualenv of
#                    scripts/setup.sh), vocab.json + merges.txt, tokenizer_config.json,
#                    special_tokens_map.json; each prefixed with the mode byte of fuzz_bpe_load.cpp
# Usage: fuzz/make_seeds.sh [path/to/tlmoe] [OUT_DIR]     (defaults: build/tlmoe, fuzz/seeds)
# The committed seeds stay small: a few KB a file, at most 30 files a target.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tlmoe=$(realpath "${1:-$root/build/tlmoe}")
out=$(realpath -m "${2:-$root/fuzz/seeds}")
py=$("$root/scripts/setup.sh" --print)
[ -x "$tlmoe" ] || { echo "make_seeds.sh: no tlmoe binary at $tlmoe (make build)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fresh() { rm -rf "${out:?}/$1"; mkdir -p "$out/$1"; }

echo "[seeds] gym" >&2
"$tlmoe" gym --out gym --seed 42 >/dev/null

# ---- tsv: 24 files (k-shot and full, every split), first 8 lines ----------------------------
fresh tsv
find gym -name '*.tsv' | sort | awk 'NR % 53 == 1' | head -n 24 | while read -r f; do
  head -n 8 "$f" > "$out/tsv/$(basename "$f")"
done
printf '\xef\xbb\xbfinput one\tanswer\r\ninput two\tgold a\tgold b\n' > "$out/tsv/bom_crlf_two_answers.tsv"

# ---- task_meta -----------------------------------------------------------------------------
fresh task_meta
cp gym/splits.json "$out/task_meta/gym_splits.json"
cp gym/ontology.json "$out/task_meta/gym_ontology.json"
cp "$root/data/crossfit/random.json" "$out/task_meta/crossfit_splits.json"
cp "$root/data/crossfit/ontology.json" "$out/task_meta/crossfit_ontology.json"
cp "$root/data/crossfit/task_metrics.json" "$out/task_meta/crossfit_task_metrics.json"
python3 - "$out/task_meta" gym/tasks.json "$root/data/crossfit/tasks.json" <<'PY'
import json, sys
out = sys.argv[1]
for name, path in (("gym_tasks.json", sys.argv[2]), ("crossfit_tasks.json", sys.argv[3])):
    tasks = json.load(open(path))
    keep = dict(list(tasks.items())[:12])  # the first tasks, as written (every field kind occurs)
    json.dump(keep, open(f"{out}/{name}", "w"), indent=1, ensure_ascii=False)
PY

# ---- config --------------------------------------------------------------------------------
fresh config
(cd "$root/configs" && find . -name '*.yaml' | sort | head -n 29) | while read -r f; do
  cp "$root/configs/$f" "$out/config/$(echo "${f#./}" | tr / _)"
done
"$tlmoe" config show "$root/configs/quickstart.yaml" > "$out/config/resolved_quickstart.yaml"

# ---- token caches of a gym cut to 3 lines a file ---------------------------------------------
echo "[seeds] preprocess" >&2
mkdir mini && cp gym/*.json mini/
for d in gym/*/; do
  t=$(basename "$d"); mkdir -p "mini/$t"
  for f in "$d"*.tsv; do head -n 3 "$f" > "mini/$t/$(basename "$f")"; done
done
cat > tiny.yaml <<'YAML'
device: cpu
data: {dir: mini, upstream_source: full, max_input_len: 32, max_output_len: 16}
tokenizer: {vocab_size: 500}
model: {d_model: 8, encoder_layers: 1, decoder_layers: 1, heads: 1, ffn_dim: 16, experts: 2, max_positions: 64}
train: {steps: 2, batch_size: 2, eval_every: 2, eval_max_examples: 2, save_every: 1}
eval: {max_len: 8}
YAML
"$tlmoe" preprocess --config tiny.yaml >/dev/null
fresh token_cache
find mini/.tlmoe-cache -name '*.tok' | sort | awk 'NR % 97 == 1' | head -n 12 | while read -r f; do
  cp "$f" "$out/token_cache/$(basename "$f")"
done

# ---- a tiny training run: checkpoints (model.safetensors, optimizer.safetensors, meta.json) ---
echo "[seeds] train" >&2
fresh safetensors
fresh checkpoint_meta
if OMP_NUM_THREADS=1 "$tlmoe" train --config tiny.yaml --run-dir run --plain >train.log 2>&1; then
  n=0
  for meta in $(find run -name meta.json | sort); do
    n=$((n + 1)); cp "$meta" "$out/checkpoint_meta/meta_$n.json"
  done
  # Each safetensors file reduced to its smallest tensors (at most 6, 4 KB of data), header and
  # bytes as tlmoe wrote them.
  python3 - "$out/safetensors" $(find run -name '*.safetensors' | sort | head -n 4) <<'PY'
import json, struct, sys, os
out, files = sys.argv[1], sys.argv[2:]
for i, path in enumerate(files):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n]); data = raw[8 + n:]
    meta = header.pop("__metadata__", None)
    small = sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"][1] - kv[1]["data_offsets"][0], kv[0]))
    # the smallest tensor of each dtype first, then the smallest others
    firsts = {}
    for name, e in small: firsts.setdefault(e["dtype"], name)
    order = [n for n, _ in small if n in firsts.values()] + [n for n, _ in small if n not in firsts.values()]
    keep, size = {}, 0
    for name in order:
        e = header[name]; b, en = e["data_offsets"]
        if len(keep) == 6 or size + (en - b) > 4096: continue
        keep[name] = (e, data[b:en]); size += en - b
    keep = dict(sorted(keep.items(), key=lambda kv: kv[1][0]["data_offsets"][0]))
    new_header, blob = ({"__metadata__": meta} if meta else {}), b""
    for name, (e, bytes_) in keep.items():
        new_header[name] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [len(blob), len(blob) + len(bytes_)]}
        blob += bytes_
    text = json.dumps(new_header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    name = os.path.basename(os.path.dirname(path)) + "_" + os.path.basename(path)
    open(f"{out}/{i}_{name}", "wb").write(struct.pack("<Q", len(text)) + text + blob)
PY
else
  echo "[seeds] tlmoe train failed (train.log below); no safetensors/checkpoint_meta seeds from it" >&2
  tail -n 5 train.log >&2
fi

# ---- bpe: gym inputs and outputs -------------------------------------------------------------
fresh bpe
find gym -name '*_16_42_train.tsv' | sort | head -n 25 | while read -r f; do
  head -n 1 "$f" | tr '\t' '\n' > "$out/bpe/$(basename "$f" .tsv).txt"
done
printf " caf\xc3\xa9 <mask> isn't 12 [SEP]  <s>\n\n\tthe end" > "$out/bpe/specials_and_spaces.txt"

# ---- bpe_load: Hugging Face tokenizer files of a tiny byte-level BPE ---------------------------
fresh bpe_load
"$py" - "$out/bpe_load" <<'PY'
import json, sys
from tokenizers import Tokenizer, AddedToken, models, pre_tokenizers, decoders
out = sys.argv[1]
def bytes_to_unicode():  # GPT-2's byte table
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, map(chr, cs)))
b2u = bytes_to_unicode()
vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
for b in range(256): vocab[b2u[b]] = 4 + b
vocab["<mask>"] = 260
merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("in", "g"), ("Ã", "©")]
for a, b in merges: vocab.setdefault(a + b, len(vocab))
def write(name, mode, text):
    open(f"{out}/{name}", "wb").write(bytes([mode]) + text.encode())
for prefix, extra in ((False, False), (True, False), (False, True)):
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<s>", "<pad>", "</s>", "<unk>"]]
                           + [AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    if extra:
        tok.add_tokens([AddedToken("<extra>", normalized=True), AddedToken(" the end", rstrip=True)])
        tok.add_special_tokens([AddedToken("[SEP]", special=True, lstrip=True, rstrip=True)])
    write(f"tokenizer_json_prefix{int(prefix)}_extra{int(extra)}", 0, tok.to_str())
merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
write("vocab_json_merges_txt", 1, json.dumps(vocab, ensure_ascii=False) + "\0" + merges_txt)
added = lambda i, c, s, l=False, r=False: {"content": c, "lstrip": l, "normalized": not s, "rstrip": r,
                                           "single_word": False, "special": s}
cfg = {"add_prefix_space": False, "clean_up_tokenization_spaces": True, "model_max_length": 1024,
       "tokenizer_class": "BartTokenizer", "errors": "replace",
       "added_tokens_decoder": {"0": added(0, "<s>", True), "1": added(1, "<pad>", True), "2": added(2, "</s>", True),
                                "3": added(3, "<unk>", True), "260": added(260, "<mask>", True, l=True),
                                str(len(vocab)): added(len(vocab), "[SEP]", True, True, True),
                                str(len(vocab) + 1): added(len(vocab) + 1, "<extra>", False)},
       "additional_special_tokens": ["[SEP]"]}
write("tokenizer_config", 2, json.dumps(cfg, indent=2))
write("special_tokens_map", 3, json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                           "pad_token": "<pad>", "mask_token": {"content": "<mask>", "lstrip": True},
                                           "additional_special_tokens": [{"content": "[SEP]"}]}, indent=2))
PY

# Identical files (a run's best and last checkpoints may be the same) are kept once.
for d in "$out"/*/; do
  (cd "$d" && md5sum -- * | sort | awk 'seen[$1]++ { print $2 }' | xargs -r rm --)
done
for d in "$out"/*/; do
  echo "[seeds] $(basename "$d"): $(find "$d" -type f | wc -l) files, $(du -sk "$d" | cut -f1) KB" >&2
done
