"""Run a tiny harvest in a subprocess: ``python -m tests.unit.features.harvest_proc DB STATE [KILL_AT]``.

With ``KILL_AT`` the process SIGKILLs itself right after folding batch ``KILL_AT`` (a deterministic point).
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from mechscope.features.db import FeatureDB
from mechscope.features.harvest import HarvestConfig, Harvester
from mechscope.features.source import dictionary_features
from mechscope.features.stats import StatsConfig
from tests.unit.features import helpers

SEQ, N_SEQ = 16, 40
CFG = HarvestConfig(n_tokens=N_SEQ * (SEQ - 1), seq_len=SEQ, batch_size=4, checkpoint_every=2, n_logits=4,
                    n_neighbours=3, stats=StatsConfig(top_k=5, reservoir=8, n_quantiles=4, left=3, right=2, n_bins=12))


def run(db_path: str, state_dir: str, kill_at: int | None = None) -> dict:
    torch.set_num_threads(1)
    model = helpers.model()
    fs = dictionary_features(model, helpers.dictionary(), "tiny-sae")
    db = FeatureDB.open(db_path)

    def on_batch(i: int) -> None:
        if kill_at is not None and i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    h = Harvester(model, fs, db, CFG, model_name="tiny", state_dir=state_dir, tokens=helpers.tokens(N_SEQ, SEQ))
    return h.run(progress=False, on_batch=on_batch)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
