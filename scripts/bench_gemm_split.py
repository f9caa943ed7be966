#!/usr/bin/env python3
"""One GEMM on M rows against the same rows split in three, each with its own weight matrix: what a
mixed-task batch costs a routed layer's projection in a 3-expert TL-MoE, apart from dispatch.
Uses the LibTorch wheel that scripts/setup.sh installs:
  ~/.cache/tlmoe/venv-torch-*/bin/python scripts/bench_gemm_split.py
"""
import time

import torch


def ms_per_call(f, n=20):
    for _ in range(3):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1e3


def main():
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for d, f in [(512, 2048), (768, 3072)]:
        w, b = torch.randn(f, d), torch.randn(f)
        ws = [torch.randn(f, d) for _ in range(3)]
        for m in [256, 1024, 2048]:
            x = torch.randn(m, d)
            parts = [torch.randn(m // 3 + (1 if i < m % 3 else 0), d) for i in range(3)]
            one = ms_per_call(lambda: torch.nn.functional.linear(x, w, b))
            three = ms_per_call(lambda: [torch.nn.functional.linear(p, ws[i], b) for i, p in enumerate(parts)])
            print(f"d={d} ffn={f} rows={m}: one GEMM {one:.2f} ms, three of ~{m // 3} rows {three:.2f} ms, "
                  f"three / one = {three / one:.2f}x")


if __name__ == "__main__":
    main()
