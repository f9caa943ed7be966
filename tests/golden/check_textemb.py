"""The reference's TextEmb recipe in Hugging Face transformers, against tlmoe's
(task_rep.textemb_variant: reference; tests/hf/test_textemb_reference.cpp).

  check_textemb.py HF_DIR FILE

FILE (safetensors, written by the test): "ids" [N, S] int64 (each row <s> ... </s>, right-padded
with pad), "expected" [D], tlmoe's vector. Here: BartModel of HF_DIR on batches of 8 rows in
order, each batch cut to its longest row, the attention mask of its real tokens and no decoder
input (transformers shifts the input right behind decoder_start_token_id); the decoder's
last_hidden_state averaged over every position, pads included; those per-row vectors averaged.
Exit 0 when the two agree to 1e-5.
"""
import sys

import torch
from safetensors.torch import load_file
from transformers import BartModel

model = BartModel.from_pretrained(sys.argv[1]).eval()
t = load_file(sys.argv[2])
ids, expected = t["ids"], t["expected"]
pad = model.config.pad_token_id
rows = []
with torch.no_grad():
    for i in range(0, ids.shape[0], 8):
        batch = ids[i : i + 8]
        keep = (batch != pad).any(0)  # drop the columns that are pad in every row
        batch = batch[:, keep]
        out = model(input_ids=batch, attention_mask=(batch != pad).long())
        rows.append(out.last_hidden_state.mean(1))
got = torch.cat(rows).mean(0)
err = (got - expected).abs().max().item()
print(f"textemb (reference recipe): max |tlmoe - transformers| = {err:.2e} over {ids.shape[0]} rows")
sys.exit(0 if err < 1e-5 else 1)
