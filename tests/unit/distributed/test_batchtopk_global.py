"""BatchTopK's selection over ranks' shares equals the selection over the whole batch (no processes needed:
a stand-in Sync plays the all-gather; the 2-rank gloo test is ``test_ddp.test_two_ranks_equal_one``)."""

from __future__ import annotations

import torch

from mechscope.dictionaries.batchtopk import global_batch_topk


class _TwoRanks:
    """``gather_rows`` of a 2-rank group whose other rank's contribution is known in advance."""

    world_size = 2

    def __init__(self, parts: list[torch.Tensor]) -> None:
        self.parts = parts

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.parts)


def test_shares_choose_the_whole_batch_selection() -> None:
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(16, 24, generator=g) - 0.3
    pre[:8] += 1.5  # rank 0's rows are larger: per-share top-k would choose differently
    k, halves = 3, (pre[:8].reshape(-1), pre[8:].reshape(-1))
    n_keep = k * pre.shape[0]
    cands = [h.topk(n_keep, sorted=False).values.float() for h in halves]
    top = pre.reshape(-1).topk(n_keep)
    whole = set(top.indices[top.values > 0].tolist())
    got = set()
    for r, h in enumerate(halves):
        idx, kept = global_batch_topk(h, n_keep, _TwoRanks(cands))
        got |= {i + r * h.numel() for i in idx.tolist()}
        assert float(kept.min()) == float(top.values[top.values > 0].min())  # the running threshold's input
    assert got == whole
    per_share = {i + r * h.numel() for r, h in enumerate(halves)
                 for i in h.topk(k * 8).indices[h.topk(k * 8).values > 0].tolist()}
    assert per_share != whole  # the case where thresholding each share alone would differ
