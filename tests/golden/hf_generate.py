#!/usr/bin/env python3
"""What transformers' own generate() + decode() give for texts, the reference of tlmoe's
predictions on a Hugging Face directory (test tooling; tlmoe never runs Python).

    hf_generate.py MODEL_DIR REQUEST.json OUT.json

REQUEST: {"texts": [...], "semantics": "current" | "legacy"}. The model decodes each text on its
own (no padding), with the directory's generation_config.json, exactly as a user would:

    model = BartForConditionalGeneration.from_pretrained(d)
    out = model.generate(**tok(text, return_tensors="pt"))
    tok.decode(out[0], skip_special_tokens=True).strip()      # .strip(): CrossFit's scoring

"current" runs the transformers of this virtualenv (5.x) with tok = AutoTokenizer.from_pretrained(d).
"legacy" runs this script again with transformers 4.x on PYTHONPATH ({sys.prefix}/legacy-transformers,
installed by scripts/setup.sh), with tok = BartTokenizer (vocab.json + merges.txt, as CrossFit loads
bart-base) or BartTokenizerFast (tokenizer.json alone), and decodes with the clean-up of the 4.x
releases the paper ran: clean_up_tokenization_spaces as tokenizer_config.json says, true when it
says nothing (4.45 turned that default to false).
OUT: {"transformers": version, "predictions": [...], "tokens": [[generated ids]...]}.
"""
import json
import os
import subprocess
import sys
from pathlib import Path


def run_legacy(argv):
    legacy = Path(sys.prefix) / "legacy-transformers"
    if not (legacy / "transformers").is_dir():
        sys.exit(f"hf_generate.py: {legacy} has no transformers 4.x (run scripts/setup.sh)")
    env = dict(os.environ, PYTHONPATH=str(legacy), TLMOE_HF_GENERATE_LEGACY="1")
    sys.exit(subprocess.call([sys.executable, __file__, *argv], env=env))


def main():
    model_dir, request, out = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
    if request.get("semantics") == "legacy" and not os.environ.get("TLMOE_HF_GENERATE_LEGACY"):
        run_legacy(sys.argv[1:])
    import torch
    import transformers
    from transformers import AutoTokenizer, BartForConditionalGeneration, BartTokenizer, BartTokenizerFast

    want = "4." if request.get("semantics") == "legacy" else "5."
    if not transformers.__version__.startswith(want):
        sys.exit(f"hf_generate.py: transformers {transformers.__version__} is not the {request.get('semantics')} release")
    decode_args = {}
    if request.get("semantics") == "legacy":
        d = Path(model_dir)
        tok = (BartTokenizer if (d / "vocab.json").exists() else BartTokenizerFast).from_pretrained(model_dir)
        tcfg = d / "tokenizer_config.json"
        tcfg = json.loads(tcfg.read_text()) if tcfg.exists() else {}
        decode_args["clean_up_tokenization_spaces"] = tcfg.get("clean_up_tokenization_spaces", True)
    else:
        tok = AutoTokenizer.from_pretrained(model_dir)
    model = BartForConditionalGeneration.from_pretrained(model_dir).eval()
    preds, tokens = [], []
    with torch.no_grad():
        for text in request["texts"]:
            enc = tok(text, return_tensors="pt")
            seq = model.generate(**enc)
            tokens.append(seq[0].tolist())
            preds.append(tok.decode(seq[0], skip_special_tokens=True, **decode_args).strip())
    out.write_text(json.dumps({"transformers": transformers.__version__, "predictions": preds, "tokens": tokens},
                              ensure_ascii=False))


if __name__ == "__main__":
    main()
