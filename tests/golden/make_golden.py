#!/usr/bin/env python3
"""Golden files for tlmoe's Hugging Face interoperability tests, made with the real
`transformers` / `tokenizers` packages (test tooling only: tlmoe never runs Python).

    make_golden.py OUT_DIR

writes
    OUT_DIR/tok/            vocab.json + merges.txt of a small byte-level BPE trained here
    OUT_DIR/<model>/        save_pretrained() of a small random BART (several configurations)
    OUT_DIR/<model>/golden.safetensors   inputs, logits, encoder states, generated tokens
    OUT_DIR/golden.json     what is where: tokenizer cases, models, generation settings
    OUT_DIR/e2e_*/          BART directories exactly as transformers saves them, for the
                            command-line tests (tests/hf/test_hf_cli.py's references come from
                            tests/golden/hf_generate.py at test time)
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, ByteLevelBPETokenizer
from transformers import BartConfig, BartForConditionalGeneration, BartTokenizer, GenerationConfig

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's a dog's life, isn't it?",
    "Question: what is the capital of France? Answer: Paris.",
    "[glue-sst2] this movie was great , I'd watch it again !",
    "Numbers 12345 and 3.14159, dates 2022-03-01, prices $9.99 and 100%.",
    "Zürich, Köln, São Paulo and Kraków are cities; naïve café résumé.",
    "Привет, мир! Как дела? Москва — столица России.",
    "日本語のテキストです。東京は大きい都市です。",
    "中文文本测试，北京是中国的首都。",
    "مرحبا بالعالم، هذه جملة عربية.",
    "Emoji 😀🎉👍 and symbols ©®™ ∑∫√ ← → ★",
    "Tabs\tand  double  spaces,\nnew lines\n\nand trailing spaces   ",
    "we're they've I'm you'll he'd she's can't won't",
    "Ελληνικά κείμενα και αριθμοί ٣٤٥ ۶۷ ४५६",
]

SAMPLES = [
    "Hello world",
    " Hello world",
    " [glue-sst2] this movie was great , I'd watch it again !",
    "It's 3:45pm -- isn't it?  Yes!!! ...",
    "we're they've I'm you'll he'd she's can't won't 'S 'T 'Re",
    "  leading and trailing   ",
    "a\n\nb\t\tc \n d\r\n",
    "Zürich naïve café résumé Kraków",
    "Привет, мир! Москва — столица.",
    "日本語のテキスト。中文文本测试，",
    "مرحبا بالعالم",
    "Emoji 😀🎉👍 ©®™ ∑∫√ ← → ★",
    "x² ½ ⅔ Ⅻ ٣٤٥ ۶۷ ४५६ 12345",
    "unseen words: quixotic zephyr jubilant",
    "mixed<s>special</s>tokens <pad> and <unk> here",
    "",
    " ",
    "don't stop . , ? ! ' s",
]

# facebook/bart-base's tokenizer.json declares <mask> with lstrip: it absorbs the space before it
MASK_SAMPLES = ["a <mask> b", "a  <mask>b", "x\n<mask>", "<mask>", "Fill: the <mask> sat on the <mask>.",
                " <mask> ", "no mask <s> here </s>", "\u3000<mask>\u00a0x"]

MODELS = [
    # name, config overrides (vocab None = the tokenizer's vocabulary)
    ("tiny_a", 0.0, dict(vocab_size=None, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                    decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, scale_embedding=False,
                    max_position_embeddings=64)),
    ("tiny_b", 2.0, dict(vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, scale_embedding=True,
                    max_position_embeddings=40)),
    ("tiny_c", 3.5, dict(vocab_size=257, d_model=24, encoder_layers=2, decoder_layers=2, encoder_attention_heads=3,
                    decoder_attention_heads=3, encoder_ffn_dim=40, decoder_ffn_dim=40, scale_embedding=False,
                    max_position_embeddings=32)),
]

GENERATIONS = [
    # the model's generation_config.json (BART-like: forced BOS/EOS, no-repeat-ngram, early stopping)
    ("beam_cfg", dict(num_beams=4, max_length=12, min_length=3, no_repeat_ngram_size=2, length_penalty=1.5,
                      early_stopping=True, forced_bos_token_id=0, forced_eos_token_id=2)),
    ("beam_noearly", dict(num_beams=3, max_length=10, min_length=0, no_repeat_ngram_size=0, length_penalty=0.7,
                          early_stopping=False, forced_bos_token_id=None, forced_eos_token_id=2)),
    # the length limit without forced EOS: running beams become hypotheses at max_length
    ("beam_maxlen", dict(num_beams=3, max_length=7, min_length=0, no_repeat_ngram_size=0, length_penalty=2.0,
                         early_stopping=False, forced_bos_token_id=None, forced_eos_token_id=None)),
    ("beam_wide", dict(num_beams=5, max_length=11, min_length=2, no_repeat_ngram_size=3, length_penalty=-0.5,
                       early_stopping=False, forced_bos_token_id=0, forced_eos_token_id=2)),
    ("greedy", dict(num_beams=1, max_length=9, min_length=2, no_repeat_ngram_size=3, length_penalty=1.0,
                    early_stopping=False, forced_bos_token_id=0, forced_eos_token_id=2)),
]


def make_tokenizer(out: Path):
    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(CORPUS * 3, vocab_size=520, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(out))
    hf = BartTokenizer.from_pretrained(str(out))
    force = BartTokenizer.from_pretrained(
        str(out), clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True)
    cases = []
    for text in SAMPLES:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        cases.append({
            "text": text,
            "ids": ids,
            "with_specials": hf(text)["input_ids"],
            "decoded_raw": hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
            "decoded_clean": force.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=True),
        })
    # the same vocabulary with <mask> lstrip (as facebook/bart-base), saved with its tokenizer.json
    masked = BartTokenizer.from_pretrained(str(out), mask_token=AddedToken("<mask>", lstrip=True, rstrip=False))
    mdir = out.parent / "tok_mask"
    masked.save_pretrained(str(mdir))
    for f in ("vocab.json", "merges.txt"):
        (mdir / f).write_bytes((out / f).read_bytes())
    mask_cases = [{"text": t, "ids": masked(t, add_special_tokens=False)["input_ids"]} for t in MASK_SAMPLES]
    return hf, cases, mask_cases


def randomise(model, seed, eos_bias):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        model.final_logits_bias.copy_(0.2 * torch.randn(model.final_logits_bias.shape, generator=g))
        # a likelier </s>: hypotheses finish at different lengths, so beam search's length
        # penalty, early stopping and finished-hypothesis bookkeeping all matter
        model.final_logits_bias[0, 2] += eos_bias


# Directories as a user gets them from transformers, for `tlmoe eval/adapt/export --checkpoint hf:DIR`:
# name, eos bias, tokenizer layout, config, generation_config.json (BART-like settings the
# command-line must pick up without being told)
E2E = [
    ("e2e_json", 2.5, "tokenizer.json",
     dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
          encoder_ffn_dim=64, decoder_ffn_dim=64, scale_embedding=True, max_position_embeddings=96,
          dropout=0.05, attention_dropout=0.02, activation_dropout=0.03, init_std=0.03),
     dict(num_beams=4, max_length=20, min_length=3, no_repeat_ngram_size=3, length_penalty=2.0,
          early_stopping=True, forced_bos_token_id=0, forced_eos_token_id=2)),
    ("e2e_vocab", 2.5, "vocab.json+merges.txt",
     dict(d_model=24, encoder_layers=1, decoder_layers=3, encoder_attention_heads=2, decoder_attention_heads=2,
          encoder_ffn_dim=40, decoder_ffn_dim=40, scale_embedding=False, max_position_embeddings=80),
     dict(num_beams=3, max_length=16, min_length=0, no_repeat_ngram_size=0, length_penalty=0.8,
          early_stopping=False, forced_eos_token_id=2)),
]


def byte_piece(b):
    """The byte-level BPE piece of one raw byte (GPT-2's byte table)."""
    n = 0
    for x in range(256):
        printable = 33 <= x <= 126 or 0xA1 <= x <= 0xAC or 0xAE <= x <= 0xFF
        if x == b:
            return chr(x) if printable else chr(256 + n)
        n += 0 if printable else 1


def randomise_e2e(model, seed, eos_bias, tok):
    """Small random weights and a bias towards tokens whose decoding matters: spaces before
    punctuation (clean-up), special tokens (skipped), lone bytes of multi-byte sequences (invalid
    UTF-8 once joined) and a likelier </s> (beams finish at several lengths)."""
    randomise(model, seed, 0.0)
    vocab = tok.get_vocab()
    boosted = ["\u0120,", "\u0120!", "\u0120.", "'s", "n't", "<mask>", "<unk>", "\u0120the", "\u0120dog"]
    boosted += [byte_piece(b) for b in (0xC1, 0xED, 0xA0, 0xF4, 0x90, 0xE2, 0x82)]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(0.5)
        for piece in boosted:
            if piece in vocab:
                model.final_logits_bias[0, vocab[piece]] += 2.0
        model.final_logits_bias[0, 2] += eos_bias


def make_e2e(out: Path, tok, tok_dir: Path, index):
    for mi, (name, eos_bias, layout, over, gen) in enumerate(E2E):
        cfg = BartConfig(activation_function="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
                         decoder_start_token_id=2, forced_eos_token_id=2, vocab_size=len(tok), **over)
        model = BartForConditionalGeneration(cfg)
        randomise_e2e(model, 300 + mi, eos_bias, tok)
        model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1,
                                                   decoder_start_token_id=2, **gen)
        d = out / name
        model.save_pretrained(str(d))
        tok.save_pretrained(str(d))
        if layout == "vocab.json+merges.txt":
            for f in ("vocab.json", "merges.txt"):
                (d / f).write_bytes((tok_dir / f).read_bytes())
            (d / "tokenizer.json").unlink(missing_ok=True)
        else:
            for f in ("vocab.json", "merges.txt"):
                (d / f).unlink(missing_ok=True)
        index.setdefault("e2e", []).append({"name": name, "dir": name, "layout": layout,
                                            "files": sorted(p.name for p in d.iterdir())})


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    hf_tok, cases, mask_cases = make_tokenizer(out / "tok")
    index = {"transformers": __import__("transformers").__version__,
             "tokenizer": {"dir": "tok", "cases": cases, "mask_dir": "tok_mask", "mask_cases": mask_cases},
             "models": []}
    for mi, (name, eos_bias, over) in enumerate(MODELS):
        over = dict(over)
        if over["vocab_size"] is None:
            over["vocab_size"] = len(hf_tok)
        V = over["vocab_size"]
        cfg = BartConfig(activation_function="gelu", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                         forced_eos_token_id=None, **over)
        model = BartForConditionalGeneration(cfg)
        randomise(model, 100 + mi, eos_bias)
        model.eval()
        g = torch.Generator().manual_seed(200 + mi)
        B, S, T = 3, 9, 6
        ids = torch.randint(5, V, (B, S), generator=g)
        ids[:, 0] = 0
        mask = torch.ones(B, S, dtype=torch.long)
        lens = [S, S - 3, S - 5]
        for b, n in enumerate(lens):
            ids[b, n - 1] = 2
            ids[b, n:] = 1
            mask[b, n:] = 0
        dec = torch.randint(5, V, (B, T), generator=g)
        dec[:, 0] = 2
        with torch.no_grad():
            o = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        tensors = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec,
                   "logits": o.logits.float().contiguous(), "encoder_states": o.encoder_last_hidden_state.float().contiguous()}
        gens = []
        for gname, gset in GENERATIONS:
            gc = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2,
                                  do_sample=False, **gset)
            # a neutral model default: generate() fills settings left None from the model's
            # generation config, so a None here must not pick up BART's forced EOS
            model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1,
                                                       decoder_start_token_id=2)
            with torch.no_grad():
                seq = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc)
            tensors["gen_" + gname] = seq.contiguous()
            gens.append({"name": gname, "settings": gset, "tensor": "gen_" + gname})
        # the first setting is the checkpoint's own generation_config.json
        model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1,
                                                   decoder_start_token_id=2, **GENERATIONS[0][1])
        d = out / name
        model.save_pretrained(str(d))
        if mi == 0:  # a complete BART directory: weights, configs and the tokenizer's files
            hf_tok.save_pretrained(str(d))
            for f in ("vocab.json", "merges.txt"):
                (d / f).write_bytes((out / "tok" / f).read_bytes())
        save_file(tensors, str(d / "golden.safetensors"))
        index["models"].append({"name": name, "dir": name, "config": over, "generations": gens,
                                "has_tokenizer": mi == 0})
    make_e2e(out, hf_tok, out / "tok", index)
    (out / "golden.json").write_text(json.dumps(index, indent=1, ensure_ascii=False))
    print(f"golden files in {out}")


if __name__ == "__main__":
    main()
