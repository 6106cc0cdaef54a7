"""Crash safety of every writer, with the failure injected in-process at the dangerous moment (the
SIGKILL versions with real subprocesses are in ``test_kill_resume.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from mechscope.activations.source import ActivationSource, SourceConfig
from mechscope.activations.store import ActivationStore
from mechscope.dictionaries import io
from mechscope.dictionaries.topk import TopKConfig, TopKDictionary
from mechscope.dictionaries.train import Trainer, TrainerConfig
from mechscope.models.transformer import HookedTransformer
from mechscope.train import TrainConfig, latest_checkpoint, read_metrics, train
from tests.conftest import tiny_cfg


class Killed(BaseException):
    """Stands in for a SIGKILL: nothing after the raise point runs (not caught by ``except Exception``)."""


def _sae() -> TopKDictionary:
    return TopKDictionary(TopKConfig(d_in=8, d_sae=16, k=2, seed=0))


def _batches(n: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(16, 8, generator=g) for _ in range(n)]


def test_dictionary_checkpoint_survives_kill_while_rewriting_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """keep_checkpoints=1 and a kill while the (only) checkpoint directory is replaced: one must remain."""
    cfg = TrainerConfig(total_steps=4, checkpoint_every=2, keep_checkpoints=1, out_dir=str(tmp_path), progress=False)
    Trainer(_sae(), cfg).fit(iter(_batches(4)))
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name.startswith("step-"):
            raise Killed
        real(src, dst)

    tr = Trainer(_sae(), cfg)
    tr.load_checkpoint()
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        tr.save_checkpoint()  # re-saving the final step, as fit did twice
    monkeypatch.setattr(os, "replace", real)
    again = Trainer(_sae(), cfg)
    assert again.load_checkpoint() and again.step == 4


def test_dictionary_metrics_hold_each_step_once_after_resume(tmp_path: Path) -> None:
    cfg = TrainerConfig(total_steps=6, checkpoint_every=2, log_every=1, out_dir=str(tmp_path), progress=False,
                        norm_estimate_batches=1)
    data = _batches(6)

    def dies_after(n: int):  # yields n batches then "kills" the run (after step n is logged, before its checkpoint)
        yield from data[:n]
        raise Killed

    with pytest.raises(Killed):
        Trainer(_sae(), cfg).fit(dies_after(3))
    Trainer(_sae(), cfg).fit(iter(data))
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_dictionary_dir_is_never_torn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill after the new weights are written but before the config leaves the old dictionary whole."""
    old = _sae()
    io.save(old, tmp_path / "d")
    new = TopKDictionary(TopKConfig(d_in=8, d_sae=32, k=4, seed=1))
    real = io.atomic_write_json

    def write_json(path: Path, data: object) -> None:
        if path.name == "config.json":
            raise Killed
        real(path, data)

    monkeypatch.setattr(io, "atomic_write_json", write_json)
    with pytest.raises(Killed):
        io.save(new, tmp_path / "d")
    monkeypatch.setattr(io, "atomic_write_json", real)
    back = io.load(tmp_path / "d")
    assert back.cfg == old.cfg and torch.equal(back.W_dec, old.W_dec)


def _model() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), (x, (x[:, 0] > 0).long())


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


CFG = TrainConfig(steps=6, lr=1e-2, eval_every=2, checkpoint_every=3, progress=False)


def test_train_run_without_latest_pointer_resumes(tmp_path: Path) -> None:
    """Killed after publishing its first checkpoint, before the `latest` pointer: --resume still works."""
    model, batch = _model()
    train(model, _loss, batch, CFG.replace(steps=3), tmp_path, experiment="x")
    (tmp_path / "checkpoints" / "latest").unlink()
    model, batch = _model()
    res = train(model, _loss, batch, CFG, tmp_path, experiment="x", resume=True)
    assert res.resumed_from == 3 and res.step == 6 and latest_checkpoint(tmp_path).name == "step_00000006"


def test_train_run_killed_before_first_checkpoint_resumes(tmp_path: Path) -> None:
    model, batch = _model()
    calls = [0]

    def dying_loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 3:
            raise Killed
        return _loss(m, b)

    with pytest.raises(Killed):
        train(model, dying_loss, batch, CFG, tmp_path, experiment="x")
    assert (tmp_path / "run.json").is_file() and latest_checkpoint(tmp_path) is None
    model, batch = _model()
    res = train(model, _loss, batch, CFG, tmp_path, experiment="x", resume=True)
    ref_model, _ = _model()
    ref = train(ref_model, _loss, batch, CFG, tmp_path / "ref", experiment="x")
    assert res.step == 6 and [r["step"] for r in read_metrics(tmp_path)] == [r["step"] for r in read_metrics(tmp_path / "ref")]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()))
    assert ref.step == 6


def test_harvest_killed_before_finish_completes_on_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = HookedTransformer(tiny_cfg("llama"), seed=0).eval()
    toks = torch.randint(0, 50, (8, 6), generator=torch.Generator().manual_seed(0))
    src = ActivationSource(model, ["blocks.0.hook_resid_post"], toks, SourceConfig(batch_size=2))
    monkeypatch.setattr(ActivationStore, "finish", lambda self: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        src.harvest(tmp_path, 30, shard_rows=10, progress=False)
    monkeypatch.undo()
    assert not ActivationStore.open(tmp_path).complete and ActivationStore.open(tmp_path).n_rows == 30
    store = src.harvest(tmp_path, 30, shard_rows=10, progress=False)
    assert store.complete and ActivationStore.open(tmp_path).complete


def test_induction_resume_after_a_kill_before_the_first_checkpoint(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from mechscope.experiments.induction import config as ind_config
    from mechscope.experiments.induction import run as ind

    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):
        (docs / f"{i}.txt").write_text(f"def f{i}(x):\n    return x + {i}\n" * 30)
    cfg = ind_config.InductionConfig(corpus=str(docs), tokenizer="bytes", vocab_size=None, n_ctx=64, d_model=16, n_heads=2,
                              d_head=8, batch_size=2, steps=4, eval_every=2, checkpoint_every=2, warmup_steps=1)
    real, calls = ind._lm_loss, [0]

    def dying(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 2:
            raise Killed
        return real(model, batch)

    monkeypatch.setattr(ind, "_lm_loss", dying)
    with pytest.raises(Killed):
        ind.train(cfg, tmp_path / "run", progress=False, only=("two_layer",))
    monkeypatch.setattr(ind, "_lm_loss", real)
    summary = ind.train(cfg, tmp_path / "run", progress=False, only=("two_layer",), resume=True)
    assert summary["two_layer"]["steps"] == 4
