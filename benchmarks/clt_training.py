"""CLT training cost per token on CPU (prints JSON): the decoder choices behind `dict stream --arch clt`.

A CLT over all L = 30 SmolLM2 MLPs has L(L+1)/2 = 465 decoder blocks. Per token, one training step of the
decoder costs, for ``d_sae`` = w features per layer and TopK k per layer:

* dense (what ``CrossLayerTranscoder.training_losses`` does: one batched matmul over the pairs, autocast bf16 or
  float32): 3 x 2 x 465 x w x 576 FLOP;
* sparse (only the k active features per layer decode): ``embedding_bag`` over the flattened decoder, and a
  CSR x dense product per source layer (forward only): 465 x k x 576 multiply-adds, but gather-bound;
* Adam on the decoder: 465 x w x 576 parameters per step, memory-bound.

Times are CPU seconds of this process (``time.process_time``) on random activations, one thread.
Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/clt_training.py --widths 128,256 --k 8 --batch 512``
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine  # noqa: E402

L, D = 30, 576


def _cpu(fn) -> float:  # noqa: ANN001
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def measure(w: int, k: int, b: int) -> dict[str, float]:
    """Tokens per CPU second of each decoder path at ``w`` features per layer, TopK ``k``, batch ``b``."""
    s_idx, t_idx = torch.triu_indices(L, L)
    n_pairs = s_idx.numel()
    g = torch.Generator().manual_seed(0)
    dec = torch.randn(n_pairs, w, D, generator=g).requires_grad_(True)
    idx = torch.randint(0, w, (b, L, k), generator=g)
    acts = torch.zeros(b, L, w).scatter_(2, idx, torch.rand(b, L, k, generator=g)).requires_grad_(True)
    row: dict[str, float] = {"d_sae": w, "k": k, "batch": b, "decoder_params": dec.numel(),
                             "dense_flop_per_token_train": 3 * 2 * n_pairs * w * D}
    for name, bf16 in (("dense_float32", False), ("dense_bf16", True)):
        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # noqa: B023
                per = torch.bmm(acts[:, s_idx].transpose(0, 1), dec)
                out = per.new_zeros(L, b, D).index_add(0, t_idx, per)
            out.float().pow(2).sum().backward()
        row[f"{name}_tok_per_cpu_s"] = b / _cpu(step)
        dec.grad = acts.grad = None
    order = torch.argsort(t_idx * L + s_idx)  # pairs target-major: one bag per (token, target layer)
    vals = torch.rand(b, L, k, generator=g).requires_grad_(True)

    def bag() -> None:
        ind = order[None, :, None] * w + idx[:, s_idx[order], :]
        sizes = ((torch.arange(L) + 1) * k).repeat(b)
        out = torch.nn.functional.embedding_bag(ind.reshape(-1), dec.view(-1, D), torch.cumsum(sizes, 0) - sizes,
                                                mode="sum", per_sample_weights=vals[:, s_idx[order]].reshape(-1))
        out.pow(2).sum().backward()
    row["sparse_embedding_bag_tok_per_cpu_s"] = b / _cpu(bag)
    dec.grad = None

    @torch.no_grad()
    def csr() -> None:
        out = torch.zeros(b, L, D)
        for s in range(L):
            p = (s_idx == s).nonzero()[:, 0]
            blocks = dec[p].permute(1, 0, 2).reshape(w, -1)
            out[:, s:] += (acts[:, s].detach().to_sparse_csr() @ blocks).view(b, L - s, D)
    row["sparse_csr_forward_only_tok_per_cpu_s"] = b / _cpu(csr)
    opt = torch.optim.Adam([dec], lr=1e-3)
    dec.grad = torch.zeros_like(dec)
    opt.step()
    row["adam_step_cpu_s"] = _cpu(opt.step)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="128,256")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--batch", type=int, default=512)
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = [measure(int(w), a.k, a.batch) for w in a.widths.split(",")]
    emit({"benchmark": "clt_training", "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
