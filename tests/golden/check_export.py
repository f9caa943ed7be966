#!/usr/bin/env python3
"""Loads a `tlmoe export` directory with transformers and compares its logits with tlmoe's routed
model (test tooling; tlmoe never runs Python).

    check_export.py EXPORT_DIR EXPECTED.safetensors

EXPECTED holds input_ids, attention_mask, decoder_input_ids and logits (tlmoe's routed model), and
optionally text_ids (tlmoe's tokenizer on the texts of EXPORT_DIR/texts.json). Exit 0 when the
logits agree to 1e-4 and, when given, the tokenizer gives the same ids.
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BartForConditionalGeneration, BartTokenizer


def main():
    torch.set_num_threads(1)  # a tiny model: threads only contend (CI has 2 cores)
    export, expected = Path(sys.argv[1]), load_file(sys.argv[2])
    model = BartForConditionalGeneration.from_pretrained(str(export))
    model.eval()
    with torch.no_grad():
        out = model(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"],
                    decoder_input_ids=expected["decoder_input_ids"])
    diff = (out.logits.double() - expected["logits"].double()).abs().max().item()
    print(f"max |logit diff| transformers vs tlmoe routed: {diff:.3g}")
    ok = diff < 1e-4
    texts = export / "texts.json"
    if texts.exists():
        tok = BartTokenizer.from_pretrained(str(export))
        want = expected["text_ids"].tolist()
        for text, ids in zip(json.loads(texts.read_text()), want):
            got = tok(text, add_special_tokens=False)["input_ids"]
            ids = [i for i in ids if i >= 0]
            if got != ids:
                print(f"tokenizer mismatch on {text!r}: transformers {got} tlmoe {ids}")
                ok = False
        print(f"tokenizer: {len(want)} texts compared")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
