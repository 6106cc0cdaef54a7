"""Every mechscope writer as a small deterministic scenario, for the kill-and-resume tests and the harness.

``python writers.py SCENARIO OUT`` runs one scenario into ``OUT`` (resuming what is there); with
``MECHSCOPE_CRASH_AT=point[@n]`` in the environment it SIGKILLs itself at that crash point (see
``mechscope.io_safety``). ``torn_files(OUT)`` lists files a reader would choke on; ``compare(name, out, ref)``
lists differences between a resumed result and an uninterrupted one. Nothing here imports ``tests``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

# crash points each scenario passes (the harness tries each one at its 1st, 2nd, ... hit)
POINTS: dict[str, list[str]] = {
    "dict_train": ["dict_trainer.after_step", "dict_checkpoint.before_publish", "dict_checkpoint.before_pointer",
                   "dict_checkpoint.before_prune", "dict_final.before_publish", "atomic_write.before_rename"],
    "train": ["train.after_update", "train_checkpoint.before_publish", "train_checkpoint.before_pointer",
              "atomic_write.before_rename"],
    "harvest": ["store.before_manifest", "harvest.before_finish", "atomic_write.before_rename"],
    "dict_save": ["write_dir.before_publish", "publish_dir.between_renames", "atomic_write.before_rename"],
    "model_save": ["write_dir.before_publish", "publish_dir.between_renames", "atomic_write.before_rename"],
}


def _tiny_model(seed: int = 0) -> nn.Module:
    from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig
    from mechscope.models.transformer import HookedTransformer
    from mechscope.tokens import Tokenizer

    cfg = ModelConfig(d_model=16, n_layers=2, d_vocab=20, n_ctx=16, attention=AttentionConfig(n_heads=2, d_head=8),
                      mlp=MLPConfig(d_mlp=32))
    return HookedTransformer(cfg, seed=seed, tokenizer=Tokenizer.chars("abcdefghijklmnopqrst")).eval()


def dict_train(out: Path) -> None:
    from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
    from mechscope.dictionaries.train import Trainer, TrainerConfig

    g = torch.Generator().manual_seed(0)
    data = [torch.randn(16, 8, generator=g) for _ in range(8)]
    cfg = TrainerConfig(total_steps=8, checkpoint_every=2, keep_checkpoints=1, log_every=1, norm_estimate_batches=1,
                        out_dir=str(out), progress=False)
    Trainer(TopKDictionary(TopKConfig(d_in=8, d_sae=16, k=2, seed=0)), cfg).fit(iter(data))


def train(out: Path) -> None:
    from mechscope.train import RandomBatches, TrainConfig
    from mechscope.train import train as run

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    cfg = TrainConfig(steps=8, lr=1e-2, eval_every=2, checkpoint_every=2, log_every=1, progress=False)

    def loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(m(b[0]), b[1])

    run(model, loss, RandomBatches(x, y, batch_size=8, seed=2), cfg, out, experiment="kill-test",
        callbacks=[lambda m, s: {"eval": float(loss(m, (x, y)))}], resume=(out / "run.json").is_file())


def harvest(out: Path) -> None:
    from mechscope.activations.source import ActivationSource, SourceConfig

    toks = torch.randint(0, 20, (16, 6), generator=torch.Generator().manual_seed(3))
    src = ActivationSource(_tiny_model(), ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"], toks,
                           SourceConfig(batch_size=2))
    src.harvest(out, 60, shard_rows=16, progress=False)


def dict_save(out: Path) -> None:
    from mechscope.dictionaries import io
    from mechscope.dictionaries.relu import ReLUConfig, ReLUDictionary
    from mechscope.dictionaries.topk import TopKConfig, TopKDictionary

    io.save(ReLUDictionary(ReLUConfig(d_in=8, d_sae=16, seed=1)), out / "d")
    io.save(TopKDictionary(TopKConfig(d_in=8, d_sae=24, k=3, seed=2)), out / "d")  # replaces a different one


def model_save(out: Path) -> None:
    _tiny_model(0).save(out / "m")
    _tiny_model(1).save(out / "m")


SCENARIOS: dict[str, Callable[[Path], None]] = {"dict_train": dict_train, "train": train, "harvest": harvest,
                                                "dict_save": dict_save, "model_save": model_save}


# -- checks ------------------------------------------------------------------------------------------
def torn_files(out: Path) -> list[str]:
    """Files/directories under ``out`` a reader would fail on (hidden temporaries are ignored)."""
    from safetensors.torch import load_file

    from mechscope.dictionaries import io
    from mechscope.errors import MechscopeError
    from mechscope.models.transformer import HookedTransformer

    bad = []
    for name, load in (("d", io.load), ("m", HookedTransformer.load)):  # a save killed between its renames
        if not (out / name).exists() and list(out.glob(f".{name}.*.old")):
            try:
                load(out / name)  # the readers put the old directory back
            except (ValueError, OSError, MechscopeError) as e:
                bad.append(f"{name}: {type(e).__name__}: {str(e)[:120]}")
    for p in sorted(out.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(out).parts):
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".safetensors":
                load_file(str(p))
            elif p.is_dir() and (p / "dictionary.safetensors").exists():
                io.load(p)
            elif p.is_dir() and (p / "model.safetensors").exists() and (p / "config.json").exists():
                HookedTransformer.load(p)
        except (ValueError, OSError, MechscopeError, RuntimeError) as e:
            bad.append(f"{p.relative_to(out)}: {type(e).__name__}: {str(e)[:120]}")
    return bad


def _metric_steps(out: Path) -> list[int]:
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").is_file() else []
    return [json.loads(line)["step"] for line in lines]


def compare(name: str, out: Path, ref: Path) -> list[str]:
    """Differences between the result in ``out`` (after kills and resumes) and an uninterrupted ``ref``."""
    from mechscope.activations.store import ActivationStore
    from mechscope.dictionaries import io
    from mechscope.models.transformer import HookedTransformer
    from mechscope.train import load_weights

    diffs = []

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
        if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
            diffs.append(f"{what} differ")

    if name == "dict_train":
        same(io.load(out / "dictionary").state_dict(), io.load(ref / "dictionary").state_dict(), "dictionary weights")
    elif name == "train":
        m1, m2 = (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3)) for _ in range(2))
        load_weights(m1, out)
        load_weights(m2, ref)
        same(m1.state_dict(), m2.state_dict(), "final weights")
    elif name == "harvest":
        a, b = ActivationStore.open(out), ActivationStore.open(ref)
        if not a.complete or a.n_rows != b.n_rows or len(a.manifest["shards"]) != len(b.manifest["shards"]):
            diffs.append(f"store: complete={a.complete} rows {a.n_rows} vs {b.n_rows}")
        else:
            for i in range(len(b.manifest["shards"])):
                same(a.read_shard(i), b.read_shard(i), f"shard {i}")
    elif name == "dict_save":
        same(io.load(out / "d").state_dict(), io.load(ref / "d").state_dict(), "saved dictionary")
    elif name == "model_save":
        same(HookedTransformer.load(out / "m").state_dict(), HookedTransformer.load(ref / "m").state_dict(), "model")
    if name in ("dict_train", "train") and _metric_steps(out) != _metric_steps(ref):
        diffs.append(f"metrics steps {_metric_steps(out)} vs {_metric_steps(ref)}")
    return diffs


if __name__ == "__main__":
    torch.set_num_threads(1)
    SCENARIOS[sys.argv[1]](Path(sys.argv[2]))


# -- the harness: every crash point of every scenario, each hit in turn ------------------------------
def _killed_child(name: str, out: Path, point: str) -> int:
    """Fork; the child runs ``name`` into ``out`` with ``MECHSCOPE_CRASH_AT=point``. Returns the wait status."""
    import os

    from mechscope import io_safety

    pid = os.fork()
    if pid == 0:  # the child: a real process, SIGKILLed by the kernel at the crash point
        code = 0
        try:
            os.environ[io_safety.CRASH_ENV] = point
            io_safety._crash_counts.clear()
            SCENARIOS[name](out)
        except BaseException:  # noqa: BLE001 (any failure of the child is reported by its exit code)
            code = 3
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def harness(names: list[str] | None = None, max_hits: int = 40) -> dict[str, dict[str, object]]:
    """Kill each scenario at each crash point's 1st, 2nd, ... hit (until the run no longer reaches it), resume
    in this process, and count: kills tried, survived (resume ran, nothing torn, result = uninterrupted),
    torn files found right after a kill, failures (with what went wrong)."""
    import os
    import shutil
    import signal
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mechscope-crash-"))
    report: dict[str, dict[str, object]] = {}
    try:
        for name in names or list(SCENARIOS):
            ref = root / f"ref-{name}"
            SCENARIOS[name](ref)
            tried = survived = torn = 0
            failures: list[str] = []
            for point in POINTS[name]:
                for hit in range(1, max_hits + 1):
                    out = root / f"{name}-{point}-{hit}"
                    status = _killed_child(name, out, f"{point}@{hit}")
                    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                        if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                            failures.append(f"{point}@{hit}: child failed before the crash point")
                        shutil.rmtree(out, ignore_errors=True)
                        break  # the run completed without reaching this hit: this point is exhausted
                    tried += 1
                    problems = torn_files(out) if out.exists() else []
                    torn += len(problems)
                    try:
                        SCENARIOS[name](out)
                        problems += torn_files(out) + compare(name, out, ref)
                    except Exception as e:  # noqa: BLE001 (a resume that fails is what we count)
                        problems.append(f"resume failed: {type(e).__name__}: {e}")
                    if problems:
                        failures.append(f"{point}@{hit}: {problems[:3]}")
                    else:
                        survived += 1
                    shutil.rmtree(out, ignore_errors=True)
            report[name] = {"kills_tried": tried, "kills_survived": survived, "torn_files_after_kill": torn,
                            "failures": failures}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return report
