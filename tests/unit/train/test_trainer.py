"""Trainer behaviour: schedules, batch sources, metrics, checkpoint contents, and clear errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mechscope.errors import ConfigError, ModelFileError
from mechscope.train import (
    FullBatch,
    RandomBatches,
    ReplayIterator,
    TrainConfig,
    latest_checkpoint,
    list_checkpoints,
    load_weights,
    read_checkpoint,
    read_metrics,
    train,
)
from mechscope.train import checkpoint as ck
from tests.typecheck import ill_typed


def _setup() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return model, (x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), {"acc": float((logits.argmax(-1) == y).float().mean())}


CFG = TrainConfig(steps=6, lr=1e-2, weight_decay=0.5, eval_every=2, checkpoint_every=3, progress=False)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    model, batch = _setup()
    train(model, _loss, batch, CFG, tmp_path, experiment="exp", callbacks=[lambda m, s: {"test_loss": 1.0 + s}])
    return tmp_path


def test_lr_schedules_match_formulas() -> None:
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, schedule="linear", min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(60) == pytest.approx(0.1 + 0.9 * 0.5)
    cos = cfg.replace(schedule="cosine")
    assert cos.lr_at(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 2)).item()))
    assert cos.lr_at(110) == pytest.approx(0.1)
    assert cfg.replace(schedule="constant").lr_at(100) == 1.0
    with pytest.raises(ConfigError, match="schedule"), ill_typed():
        TrainConfig(steps=10, schedule="exp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig(steps=0)


def test_adamw_matches_manual_optimizer(tmp_path: Path) -> None:
    model, batch = _setup()
    ref, _ = _setup()
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.5)
    for _ in range(6):
        opt.zero_grad()
        _loss(ref, batch)[0].backward()
        opt.step()
    train(model, _loss, batch, CFG, tmp_path)
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)


def test_metrics_and_checkpoints(run: Path) -> None:
    recs = read_metrics(run)
    assert [r["step"] for r in recs] == [0, 1, 2, 3, 4, 5, 6]
    assert [r["test_loss"] for r in recs if "test_loss" in r] == [1.0, 3.0, 5.0, 7.0]
    assert all("loss" in r and "acc" in r and "lr" in r for r in recs[:-1])
    assert [s for s, _ in list_checkpoints(run)] == [3, 6]
    assert latest_checkpoint(run) == list_checkpoints(run)[-1][1]
    c = read_checkpoint(latest_checkpoint(run))
    assert c.step == 6 and c.state is not None
    assert c.state["rng.torch"].dtype == torch.uint8
    assert any(k.startswith("optim.") and k.endswith("exp_avg_sq") for k in c.state)
    assert c.manifest["data"] == {"kind": "full", "count": 6}
    assert not any(p.name.endswith(".tmp") for p in (run / "checkpoints").iterdir())


def test_optimizer_state_roundtrip() -> None:
    model, batch = _setup()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    _loss(model, batch)[0].backward()
    opt.step()
    meta, tensors = ck.optimizer_to_tensors(opt)
    meta = json.loads(json.dumps(meta))  # must survive JSON
    opt2 = torch.optim.AdamW(model.parameters(), lr=5.0)
    ck.optimizer_from_tensors(opt2, meta, tensors)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["betas"] == (0.8, 0.9) and s2["param_groups"][0]["lr"] == 1e-3
    for i in s1["state"]:
        for k, v in s1["state"][i].items():
            assert torch.equal(v, s2["state"][i][k])


def test_random_batches_resume_exactly() -> None:
    x = torch.arange(10)
    a = RandomBatches(x, batch_size=3, seed=1)
    first = [a.next_batch() for _ in range(4)]  # crosses an epoch boundary (3 batches per epoch)
    meta, tensors = a.state()
    rest = [a.next_batch() for _ in range(5)]
    b = RandomBatches(x, batch_size=3, seed=99)
    b.load_state(json.loads(json.dumps(meta)), tensors)
    assert all(torch.equal(u, v) for u, v in zip(rest, [b.next_batch() for _ in range(5)], strict=True))
    assert sorted(torch.cat(first[:3]).tolist()) == sorted(set(torch.cat(first[:3]).tolist()))  # no repeats in an epoch
    r = ReplayIterator(lambda: iter(range(100)))
    [r.next_batch() for _ in range(7)]
    r2 = ReplayIterator(lambda: iter(range(100)))
    r2.load_state(*r.state())
    assert r2.next_batch() == 7
    with pytest.raises(ModelFileError, match="kind"):
        FullBatch(1).load_state(*r.state())


def test_fresh_run_into_used_dir_and_wrong_resume(run: Path) -> None:
    model, batch = _setup()
    with pytest.raises(ConfigError, match="already holds"):
        train(model, _loss, batch, CFG, run, experiment="exp")
    with pytest.raises(ConfigError, match="experiment 'exp', not 'other'"):
        train(model, _loss, batch, CFG, run, experiment="other", resume=True)
    with pytest.raises(ConfigError, match="lr"):
        train(model, _loss, batch, CFG.replace(lr=0.5), run, experiment="exp", resume=True)
    with pytest.raises(ConfigError, match="no checkpoints"):
        train(model, _loss, batch, CFG, run / "empty", experiment="exp", resume=True)
    # resuming with more steps continues the run
    res = train(model, _loss, batch, CFG.replace(steps=8), run, experiment="exp", resume=True)
    assert res.resumed_from == 6 and res.step == 8


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip_weights", "truncate_state", "garbage_manifest", "bad_pointer",
                                    "missing_weights"])
def test_corrupted_checkpoint_raises_model_file_error(run: Path, damage: str) -> None:
    d = latest_checkpoint(run)
    if damage == "flip_weights":
        f = d / "model.safetensors"
        _flip_byte(f, f.stat().st_size - 3)
    elif damage == "truncate_state":
        f = d / "state.safetensors"
        f.write_bytes(f.read_bytes()[:50])
    elif damage == "garbage_manifest":
        (d / "state.json").write_bytes(b"\x00\xff{not json")
    elif damage == "bad_pointer":
        (run / "checkpoints" / "latest").write_text("../../etc")
    else:
        (d / "model.safetensors").unlink()
    model, batch = _setup()
    with pytest.raises(ModelFileError):
        train(model, _loss, batch, CFG.replace(steps=9), run, experiment="exp", resume=True)


def test_load_weights_checks_shapes(run: Path) -> None:
    model, _ = _setup()
    assert load_weights(model, run, experiment="exp") == 6
    with pytest.raises(ModelFileError, match="do not fit"):
        load_weights(nn.Sequential(nn.Linear(4, 9), nn.ReLU(), nn.Linear(9, 3)), run)
    with pytest.raises(ModelFileError, match="not a run directory|neither"):
        load_weights(model, run / "nowhere")


def test_pruned_checkpoints_keep_weights(tmp_path: Path) -> None:
    model, batch = _setup()
    cfg = CFG.replace(steps=9, checkpoint_every=2, keep_optimizer_state=1)
    train(model, _loss, batch, cfg, tmp_path)
    ckpts = list_checkpoints(tmp_path)
    assert [s for s, _ in ckpts] == [2, 4, 6, 8, 9]
    assert [(p / "state.safetensors").exists() for _, p in ckpts] == [False] * 4 + [True]
    assert read_checkpoint(ckpts[0][1]).state is None  # hashes still verify after pruning


def test_resume_when_killed_between_publish_and_pointer(run: Path) -> None:
    """A checkpoint directory published but never pointed at is rewritten by the resumed run."""
    before = read_checkpoint(list_checkpoints(run)[-1][1]).weights
    (run / "checkpoints" / "latest").write_text("step_00000003\n")
    model, batch = _setup()
    res = train(model, _loss, batch, CFG, run, experiment="exp", resume=True,
                callbacks=[lambda m, s: {"test_loss": 1.0 + s}])
    assert res.resumed_from == 3 and latest_checkpoint(run).name == "step_00000006"
    after = read_checkpoint(latest_checkpoint(run)).weights
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())


def test_bfloat16_precision_autocasts_the_step_but_keeps_float32_state(tmp_path: Path) -> None:
    """bf16 runs the forward under autocast (a bf16 matmul output), weights/grads/AdamW stay float32."""
    model, batch = _setup()
    seen: list[torch.dtype] = []

    def loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        logits = m(b[0])
        seen.append(logits.dtype)
        return nn.functional.cross_entropy(logits.float(), b[1])

    cfg = TrainConfig(steps=40, lr=3e-2, progress=False, precision="bfloat16")
    train(model, loss, batch, cfg, tmp_path)
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    first = read_metrics(tmp_path)[0]["loss"]
    assert read_metrics(tmp_path)[-2]["loss"] < 0.7 * first
    with pytest.raises(ConfigError, match="precision"), ill_typed():
        TrainConfig(steps=1, precision="fp16")  # type: ignore[arg-type]
