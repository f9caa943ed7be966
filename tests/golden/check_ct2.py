#!/usr/bin/env python3
"""Converts a `tlmoe export` directory with CTranslate2's Transformers converter and decodes token
sequences with it, greedy and beam (test tooling; tlmoe never runs Python).

    check_ct2.py EXPORT_DIR CASES.json OUT.json

CASES.json: {"inputs": [[id, ...], ...], "settings": [{"name": ..., KEY: value, ...}, ...]}. Inputs
are encoder token ids (<s> ... </s>, unpadded, of any lengths). A setting holds
generation_config.json keys (num_beams, max_length, min_length, length_penalty, early_stopping,
no_repeat_ngram_size, forced_bos_token_id, forced_eos_token_id); ct2_options() maps them to
Translator.translate_batch's options as docs/export.md describes, and lists what makes the mapping
inexact (a setting CTranslate2 has no exact equivalent for).

OUT.json: {"ct2_config": the converted model's config.json, "results": [{"name", "options",
"target_prefix", "inexact": [why, ...], "ids": [[...], ...], "texts": [...], "hf_ids": [[...], ...]},
...]}. ids: per input, CTranslate2's best hypothesis as token ids (what follows the decoder start
token, through </s> when it ends there: what tlmoe's model::generate returns); texts: those ids
decoded by the export's tokenizer in transformers (skip_special_tokens); hf_ids: transformers'
generate on the export with the same setting, in the same form.
"""
import json
import sys
import tempfile
from pathlib import Path

import ctranslate2
import torch
from transformers import AutoTokenizer, BartForConditionalGeneration, GenerationConfig

# length_penalty 0 with early_stopping true: CTranslate2 reads a length penalty of exactly 0 as "stop
# when the best beam ends", transformers as "stop at num_beams finished hypotheses". A penalty this
# small keeps CTranslate2's patience rule while length ** penalty rounds to 1.0f for any length up
# to e^60, so the scores are the unnormalised sums, as with 0.
LP_ZERO = 1e-9


def ct2_options(s):
    """(translate_batch options, forced first token id or None, [reasons the mapping is inexact])."""
    beams = s.get("num_beams", 1)
    lp = float(s.get("length_penalty", 1.0))
    early = s.get("early_stopping", False) is True
    min_len = s.get("min_length", 0)
    ngram = s.get("no_repeat_ngram_size", 0)
    bos = s.get("forced_bos_token_id")
    opts = {"beam_size": beams, "patience": 1.0, "length_penalty": lp,
            # transformers' lengths count the decoder start token, CTranslate2's do not (a target
            # prefix, returned with the hypothesis, counts in both)
            "max_decoding_length": s.get("max_length", 20) - 1, "min_decoding_length": max(min_len - 1, 0),
            "no_repeat_ngram_size": ngram, "return_end_token": True}
    inexact = []
    if s.get("forced_eos_token_id") is not None:
        inexact.append("forced_eos_token_id: CTranslate2 ends at max_decoding_length with the model's token")
    if beams > 1:
        if lp == 0 and early:
            opts["length_penalty"] = LP_ZERO
        if lp != 0 and not early:
            inexact.append("early_stopping false with length_penalty != 0: transformers' stopping heuristic")
        # EOS banned by min_length at generated positions [0, min_len - 1); the first free position
        # (0, or 1 after a forced <s>) is expanded from one beam only, where renormalising shifts
        # every candidate by the same amount: harmless when no length normalisation follows
        first_free = 0 if bos is None else 1
        if ngram:
            inexact.append("no_repeat_ngram_size in beam search: CTranslate2 renormalises after the ban")
        if min_len - 1 > first_free + (1 if lp == 0 else 0):
            inexact.append("min_length in beam search: CTranslate2 renormalises after the ban")
        if bos is not None and min_len < 3:
            inexact.append("forced_bos_token_id in beam search: CTranslate2 lets no secondary beam end right after it")
    return opts, bos, inexact


def until_eos(ids, eos):
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def transformers_ids(model, inputs, s):
    S = max(len(x) for x in inputs)
    ids = torch.full((len(inputs), S), model.config.pad_token_id)
    mask = torch.zeros((len(inputs), S), dtype=torch.long)
    for b, x in enumerate(inputs):
        ids[b, : len(x)] = torch.tensor(x)
        mask[b, : len(x)] = 1
    keys = ("num_beams", "max_length", "min_length", "length_penalty", "early_stopping", "no_repeat_ngram_size",
            "forced_bos_token_id", "forced_eos_token_id")
    gc = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1,
                          decoder_start_token_id=model.config.decoder_start_token_id, do_sample=False,
                          **{k: s.get(k) for k in keys if k in s})
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc)
    return [until_eos(row[1:], 2) for row in out.tolist()]


def main():
    torch.set_num_threads(1)  # a tiny model: threads only contend (CI has 2 cores)
    export, cases, out_path = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
    tok = AutoTokenizer.from_pretrained(str(export))
    model = BartForConditionalGeneration.from_pretrained(str(export)).eval()
    # settings left out of a GenerationConfig fall back to the model's: make those neutral
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1,
                                               decoder_start_token_id=model.config.decoder_start_token_id)
    with tempfile.TemporaryDirectory() as tmp:
        ct2_dir = Path(tmp) / "ct2"
        ctranslate2.converters.TransformersConverter(str(export)).convert(str(ct2_dir))
        ct2_config = json.loads((ct2_dir / "config.json").read_text())
        vocab = json.loads((ct2_dir / "shared_vocabulary.json").read_text())
        index = {t: i for i, t in enumerate(vocab)}
        translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=1)
        source = [[vocab[i] for i in x] for x in cases["inputs"]]
        results = []
        for s in cases["settings"]:
            opts, bos, inexact = ct2_options(s)
            prefix = [[vocab[bos]] for _ in source] if bos is not None else None
            hyps = translator.translate_batch(source, target_prefix=prefix, **opts)
            ids = [[index[t] for t in h.hypotheses[0]] for h in hyps]
            results.append({"name": s["name"], "options": opts, "target_prefix": None if bos is None else vocab[bos],
                            "inexact": inexact, "ids": ids,
                            "texts": [tok.decode(x, skip_special_tokens=True) for x in ids],
                            "hf_ids": transformers_ids(model, cases["inputs"], s)})
            agree = sum(a == b for a, b in zip(ids, results[-1]["hf_ids"]))
            print(f"{s['name']}: {opts} prefix {results[-1]['target_prefix']}: CTranslate2 = transformers on "
                  f"{agree}/{len(ids)} inputs{'; inexact: ' + '; '.join(inexact) if inexact else ''}")
    out_path.write_text(json.dumps({"ct2_config": ct2_config, "results": results}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
