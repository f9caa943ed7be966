"""The ten router types against PyTorch modules built as the reference describes them
(tests/hf/test_routers.cpp): for each FILE (a safetensors of one router written by tlmoe: its
parameters under their checkpoint names, "input.z" [B, D], "output.logits" [L, B, E], and the
router's settings in the metadata), build the router from torch.nn modules, load the parameters by
name, run it on z in eval mode and compare the logits. Exit 0 when every file matches.

  check_routers.py FILE...
  check_routers.py --count      parameter counts of the ten types (m = 3, L = 12, H = 64) for
                                d_in = 768 and 128 (docs/method.md §2.1)

The modules follow the reference's structure (linear1/linear2 with GELU; one such MLP per layer;
a bidirectional nn.RNN/GRU/LSTM over the L positions, fed the task vector plus a layer-position
embedding or one projected vector per layer; one nn.TransformerEncoderLayer, sequence-first,
nhead and dim_feedforward as given) and are written here, independently of tlmoe's C++.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open


class Mlp(nn.Module):
    def __init__(self, d, h, out):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(d, h), nn.Linear(h, out)

    def forward(self, z):
        return self.linear2(F.gelu(self.linear1(z)))


class Linear(nn.Module):
    def __init__(self, D, H, L, E):
        super().__init__()
        self.L, self.E = L, E
        self.linear1, self.linear2 = nn.Linear(D, H), nn.Linear(H, L * E)

    def forward(self, z):
        return self.linear2(F.gelu(self.linear1(z))).view(-1, self.L, self.E).transpose(0, 1)


class PerLayer(nn.Module):
    def __init__(self, D, H, L, E):
        super().__init__()
        self.router_units = nn.ModuleList(Mlp(D, H, E) for _ in range(L))

    def forward(self, z):
        return torch.stack([u(z) for u in self.router_units], 0)


class OverLayers(nn.Module):
    """A sequence model over the L positions: recurrent or one transformer encoder layer."""

    def __init__(self, kind, D, H, L, E, heads, ffn):
        super().__init__()
        self.layer_specific = kind.endswith("_layer_specific")
        base = kind[: -len("_layer_specific")] if self.layer_specific else kind
        self.L, self.H = L, H
        if self.layer_specific:
            self.layer_specific_proj = nn.Linear(D, L * H)
        else:
            self.pos_embed = nn.Embedding(L, D)
        width_in = H if self.layer_specific else D
        self.recurrent = base != "transformer"
        if self.recurrent:
            cell = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[base]
            self.rnn = cell(width_in, H, bidirectional=True, batch_first=True)
            self.proj = nn.Linear(2 * H, E)
        else:
            self.transformer = nn.TransformerEncoderLayer(width_in, nhead=heads, dim_feedforward=ffn)
            self.proj = nn.Linear(width_in, E)

    def forward(self, z):
        B = z.shape[0]
        if self.layer_specific:
            x = self.layer_specific_proj(z).view(B, self.L, self.H)
        else:
            positions = torch.arange(self.L).expand(B, self.L)
            x = z.unsqueeze(1).expand(B, self.L, z.shape[1]) + self.pos_embed(positions)
        if self.recurrent:
            y, _ = self.rnn(x)
            return self.proj(y).transpose(0, 1)
        return self.proj(self.transformer(x.transpose(0, 1)))


def build(kind, D, H, L, E, heads, ffn):
    if kind == "linear":
        return Linear(D, H, L, E)
    if kind == "linear_layer_specific":
        return PerLayer(D, H, L, E)
    return OverLayers(kind, D, H, L, E, heads, ffn)


def check(path):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    kind = meta["kind"]
    D, H, L, E, heads, ffn = (int(meta[k]) for k in ("d_in", "hidden", "layers", "experts", "heads", "ffn"))
    m = build(kind, D, H, L, E, heads, ffn)
    state = {k: v for k, v in tensors.items() if not k.startswith(("input.", "output."))}
    m.load_state_dict(state, strict=True)  # the same names, every one of them
    m.eval()
    with torch.no_grad():
        got = m(tensors["input.z"])
    want = tensors["output.logits"]
    err = (got - want).abs().max().item()
    ok = got.shape == want.shape and err < 1e-5
    print(f"{kind}: max |tlmoe - torch.nn| = {err:.2e} {'ok' if ok else 'MISMATCH'}")
    return ok


KINDS = ["linear", "rnn", "lstm", "gru", "transformer", "rnn_layer_specific", "lstm_layer_specific",
         "gru_layer_specific", "transformer_layer_specific", "linear_layer_specific"]

if __name__ == "__main__":
    if sys.argv[1:] == ["--count"]:
        for kind in KINDS:
            n = [sum(p.numel() for p in build(kind, d, 64, 12, 3, 4, 64).parameters()) for d in (768, 128)]
            print(f"{kind}: {n[0]:,} / {n[1]:,}")
        sys.exit(0)
    results = [check(p) for p in sys.argv[1:]]
    sys.exit(0 if results and all(results) else 1)
