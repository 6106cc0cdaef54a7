"""Bad-input harness (issue 17): try bad inputs on the API and the CLI and count how each is answered.

Categories (the issue's): ``clear`` = a ``mechscope.errors`` exception (API) or exit status 2 with an
``error:``/usage message and no traceback (CLI); ``generic`` = any other exception or a traceback;
``silent`` = accepted and a wrong result (the input was bad, or the result fails the case's oracle).
``correct`` counts bad-looking inputs that have a right meaning and got it (a boolean mask selecting
where True). ``one_line`` counts CLI answers that are exactly one ``error:`` line.

Runs outside pytest (no runtime type checker, as users run). Compare two source trees with

    OMP_NUM_THREADS=1 PYTHONPATH=/work/main/src .venv/bin/python benchmarks/bad_inputs.py > before.json
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bad_inputs.py > after.json
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

import mechscope  # noqa: E402
from mechscope.errors import MechscopeError  # noqa: E402
from mechscope.models.config import AttentionConfig, MLPConfig, ModelConfig, NormConfig, PositionalConfig  # noqa: E402
from mechscope.models.transformer import HookedTransformer  # noqa: E402

TMP = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
os.chdir(TMP)  # CLI cases that (wrongly) run write their outputs here
SECONDS = 20  # a bad input still running after this long was accepted and is doing work: silent


class Overran(Exception):
    """Raised by the alarm when a case runs instead of being refused."""


def _alarm(signum: int, frame: Any) -> None:
    raise Overran()


signal.signal(signal.SIGALRM, _alarm)
NO_ERROR = object()


def tiny() -> HookedTransformer:
    cfg = ModelConfig(d_model=16, n_layers=2, d_vocab=23, n_ctx=12,
                      attention=AttentionConfig(n_heads=2, d_head=8, n_kv_heads=1),
                      mlp=MLPConfig(kind="gated", d_mlp=24, act="silu"), norm=NormConfig(kind="rmsnorm"),
                      positional=PositionalConfig(kind="rotary"))
    return HookedTransformer(cfg, seed=0).eval()


MODEL = tiny()
BASE = MODEL.cfg.to_dict()
TOKS = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])


def edit(path: tuple[str, ...], value: Any = None, delete: bool = False) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    t = d
    for k in path[:-1]:
        t = t[k]
    if delete:
        del t[path[-1]]
    else:
        t[path[-1]] = value
    return d


CASES: list[tuple[str, Callable[[], Any], Callable[[Any], bool] | None]] = []
"""(name, thunk, oracle): oracle None means the input is bad and must be refused; else oracle(result) says
whether an accepted result is right."""


def bad(name: str, thunk: Callable[[], Any]) -> None:
    CASES.append((name, thunk, None))


def meaningful(name: str, thunk: Callable[[], Any], oracle: Callable[[Any], bool]) -> None:
    CASES.append((name, thunk, oracle))


# -- ModelConfig.from_dict -----------------------------------------------------------------------------
for path, value in [(("attention", "n_head_kv"), 1), (("d_modle",), 16), (("mlp", "activation"), "relu"),
                    (("d_model",), "16"), (("d_model",), 16.0), (("d_model",), True), (("n_ctx",), -1),
                    (("d_vocab_out",), 0), (("d_vocab_out",), -3), (("positional", "rotary_base"), 0.0),
                    (("positional", "rotary_base"), -5.0), (("positional", "rotary_base"), "1e4"),
                    (("attention", "qkv_bias"), "false"), (("parallel_attn_mlp",), "false"),
                    (("attention", "n_heads"), 2.5), (("attention", "scale"), -1.0), (("norm", "eps"), float("nan")),
                    (("norm", "kind"), "batchnorm"), (("attention",), [2, 8]), (("mlp",), "gated"),
                    (("format_version",), "1"), (("unembed_bias",), 1), (("name",), 7)]:
    bad(f"ModelConfig.from_dict {'.'.join(path)}={value!r}", lambda p=path, v=value: ModelConfig.from_dict(edit(p, v)))
bad("ModelConfig.from_dict missing attention.d_head", lambda: ModelConfig.from_dict(edit(("attention", "d_head"), delete=True)))
bad("ModelConfig.from_dict a list", lambda: ModelConfig.from_dict([1, 2]))  # type: ignore[arg-type]
bad("ModelConfig(d_model='16')", lambda: ModelConfig(d_model="16", n_layers=1, d_vocab=5, n_ctx=4,  # type: ignore[arg-type]
                                                     attention=AttentionConfig(n_heads=1, d_head=4)))
bad("AttentionConfig(n_heads=2.0)", lambda: AttentionConfig(n_heads=2.0, d_head=4))  # type: ignore[arg-type]

# -- TrainConfig / dictionary configs ------------------------------------------------------------------
from mechscope.train.config import TrainConfig  # noqa: E402

TC = TrainConfig(steps=10).to_dict()
for k, v in [("stepz", 3), ("progress", "false"), ("lr", "1e-3"), ("betas", [0.9]), ("steps", 10.5),
             ("log_every", True), ("grad_clip", float("inf"))]:
    bad(f"TrainConfig.from_dict {k}={v!r}", lambda k=k, v=v: TrainConfig.from_dict({**TC, k: v}))
bad("TrainConfig.from_dict not a dict", lambda: TrainConfig.from_dict("steps=3"))  # type: ignore[arg-type]

from mechscope.dictionaries.registry import config_from_dict  # noqa: E402

DC = {"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 4}
for k, v in [("k", "4"), ("apply_b_dec_to_input", "false"), ("d_sae", 16.0), ("architecture", 3),
             ("input_scale", float("nan")), ("dtype", "float16"), ("seed", None)]:
    bad(f"config_from_dict {k}={v!r}", lambda k=k, v=v: config_from_dict({**DC, k: v}))

# -- SAELens loader --------------------------------------------------------------------------------------
from mechscope.dictionaries import io  # noqa: E402
from mechscope.dictionaries.registry import create  # noqa: E402

SL = io.save_saelens(create(config_from_dict({"architecture": "relu", "d_in": 8, "d_sae": 16})), TMP / "sl")
SL_CFG = json.loads((SL / "cfg.json").read_text())


def saelens_with(change: dict[str, Any], drop: str | None = None) -> Callable[[], Any]:
    def run() -> Any:
        d = TMP / f"sl-{len(list(TMP.iterdir()))}"
        d.mkdir()
        cfg = {**SL_CFG, **change}
        if drop:
            cfg.pop(drop)
        (d / "cfg.json").write_text(json.dumps(cfg))
        (d / "sae_weights.safetensors").write_bytes((SL / "sae_weights.safetensors").read_bytes())
        return io.load_saelens(d)

    return run


for change, drop in [({"apply_b_dec_to_input": "false"}, None), ({"d_sae": "16"}, None), ({"d_in": 8.0}, None),
                     ({}, "d_in"), ({"metadata": "x"}, None), ({"dtype": "int8"}, None), ({"architecture": 3}, None),
                     ({"d_sae": True}, None)]:
    bad(f"load_saelens {change or ''} {('-' + drop) if drop else ''}".strip(), saelens_with(change, drop))

# -- load() on damaged directories -----------------------------------------------------------------------
MODEL.save(TMP / "good")


def damaged(how: str) -> Callable[[], Any]:
    def run() -> Any:
        d = TMP / f"dmg-{how}"
        d.mkdir()
        for f in ("config.json", "model.safetensors"):
            (d / f).write_bytes((TMP / "good" / f).read_bytes())
        if how == "no-weights":
            (d / "model.safetensors").unlink()
        elif how == "no-config":
            (d / "config.json").unlink()
        elif how == "truncated-config":
            (d / "config.json").write_text((TMP / "good" / "config.json").read_text()[:40])
        elif how == "truncated-weights":
            (d / "model.safetensors").write_bytes((TMP / "good" / "model.safetensors").read_bytes()[:100])
        elif how == "config-list":
            (d / "config.json").write_text("[1]")
        elif how == "empty":
            for f in d.iterdir():
                f.unlink()
        return mechscope.load(d)

    return run


for how in ("no-weights", "no-config", "truncated-config", "truncated-weights", "config-list", "empty"):
    bad(f"load damaged dir: {how}", damaged(how))
bad('load("")', lambda: mechscope.load(""))
bad("load(nonexistent path)", lambda: mechscope.load(str(TMP / "nope" / "x")))
bad("load(unknown name)", lambda: mechscope.load("smolm2"))
bad("load(a .txt file)", lambda: (TMP / "f.txt").write_text("x") and mechscope.load(TMP / "f.txt"))

# -- selections ----------------------------------------------------------------------------------------------
from mechscope.interventions.apply import intervene  # noqa: E402
from mechscope.interventions.spec import Ablate  # noqa: E402

Z = "blocks.1.attn.hook_z"
POST = "blocks.0.mlp.hook_post"


def ablated(hook: str, **sel: Any) -> torch.Tensor:
    seen: dict[str, torch.Tensor] = {}
    with torch.no_grad(), intervene(MODEL, [Ablate(hook=hook, **sel)]), \
            MODEL.hooks(fwd=[(hook, lambda x, h: seen.setdefault("x", x))]):
        MODEL(TOKS)
    return seen["x"]


def zeroed_exactly(axis: int, wanted: list[int]) -> Callable[[torch.Tensor], bool]:
    """Oracle: along ``axis`` exactly the indices ``wanted`` were zeroed (everywhere on the other axes)."""

    def ok(x: torch.Tensor) -> bool:
        dims = [d for d in range(x.dim()) if d != axis]
        z = (x == 0).permute(axis, *dims).flatten(1).all(1)
        return sorted(torch.nonzero(z).flatten().tolist()) == wanted

    return ok


meaningful("positions=[bool list] selects True", lambda: ablated(Z, positions=[False, False, True, False, True, True]),
           zeroed_exactly(1, [2, 4, 5]))
meaningful("positions=bool tensor selects True",
           lambda: ablated(Z, positions=torch.tensor([True, False, False, False, False, True])),
           zeroed_exactly(1, [0, 5]))
meaningful("heads=bool tensor selects True", lambda: ablated(Z, heads=torch.tensor([False, True])),
           zeroed_exactly(2, [1]))
neur = torch.zeros(24, dtype=torch.bool)
neur[[3, 20]] = True
meaningful("neurons=bool mask selects True", lambda: ablated(POST, neurons=neur), zeroed_exactly(2, [3, 20]))
bad("positions=[True, False] (wrong length mask)", lambda: ablated(Z, positions=[True, False]))
bad("positions=float tensor", lambda: ablated(Z, positions=torch.tensor([1.0, 2.0])))
bad("heads=[0.7]", lambda: ablated(Z, heads=[0.7]))
bad("heads='1'", lambda: ablated(Z, heads="1"))
bad("positions=[9] out of range", lambda: ablated(Z, positions=[9]))
bad("heads=[0, True] mixed", lambda: ablated(Z, heads=[0, True]))

# -- sweeps ------------------------------------------------------------------------------------------------------
from mechscope.interventions.patching import patch_sweep  # noqa: E402
from mechscope.metrics import LogitDiff  # noqa: E402

CORR = TOKS.clone()
CORR[:, 2] = (TOKS[:, 2] + 5) % 23
METRIC = LogitDiff(torch.tensor([1, 2]), torch.tensor([3, 4]))


def sweep(**kw: Any) -> Any:
    return patch_sweep(MODEL, TOKS, CORR, METRIC, kw.pop("sweep", "resid_pre"), **kw)


for kw in [{"positions": [6]}, {"positions": [-7]}, {"positions": []}, {"layers": [2]}, {"layers": []},
           {"layers": [-1]}, {"readout": 6}, {"readout": -7}, {"readout": torch.tensor([5, 9])},
           {"readout": torch.tensor([5])}, {"readout": 2.0}, {"positions": [True, False, True, True, False, True]},
           {"positions": [5, -1]}, {"sweep": "resid_pree"}, {"direction": "sideways"}]:
    bad(f"patch_sweep {kw}", lambda kw=kw: sweep(**dict(kw)))
meaningful("patch_sweep positions=[-1] == [5]", lambda: (sweep(positions=[-1], layers=[1]), sweep(positions=[5], layers=[1])),
           lambda r: torch.allclose(r[0].values, r[1].values, atol=1e-5))

# -- run_with_cache ----------------------------------------------------------------------------------------------
bad("run_with_cache names= and names_filter= together",
    lambda: MODEL.run_with_cache(TOKS, names=[POST], names_filter=[Z]))
bad("run_with_cache grad_of non-scalar", lambda: MODEL.run_with_cache(TOKS, names=[POST], grad_of=lambda lg: lg[:, -1]))
bad("run_with_cache grad_of returns a float", lambda: MODEL.run_with_cache(TOKS, names=[POST], grad_of=lambda lg: 1.0))
bad("run_with_cache grad_of a constant tensor",
    lambda: MODEL.run_with_cache(TOKS, names=[POST], grad_of=lambda lg: torch.tensor(0.0)))
bad("run_with_cache max_bytes='lots'", lambda: MODEL.run_with_cache(TOKS, names=[POST], max_bytes="lots"))

# -- causal K-composition and the induction schedule (session 6) ---------------------------------------------
from mechscope.analysis.heads import induction_target  # noqa: E402
from mechscope.analysis.key_paths import key_path_effects  # noqa: E402
from mechscope.experiments.induction.config import InductionConfig  # noqa: E402

_T = induction_target(TOKS)
bad("key_path_effects sender after receiver", lambda: key_path_effects(MODEL, TOKS, _T, sender_layer=1, receiver_layer=0))
bad("key_path_effects receiver past the last layer",
    lambda: key_path_effects(MODEL, TOKS, _T, sender_layer=0, receiver_layer=MODEL.cfg.n_layers))
bad("key_path_effects ablation='resample'",
    lambda: key_path_effects(MODEL, TOKS, _T, sender_layer=0, receiver_layer=1, ablation="resample"))
bad("key_path_effects target of another length",
    lambda: key_path_effects(MODEL, TOKS, _T[:, :-1, :-1], sender_layer=0, receiver_layer=1))
bad("InductionConfig curriculum_steps=0", lambda: InductionConfig(curriculum_steps=0))
bad("InductionConfig cooldown_repeat_frac=1.5", lambda: InductionConfig(cooldown_repeat_frac=1.5))

# -- generation --------------------------------------------------------------------------------------------------
from mechscope.models.generate import generate  # noqa: E402

for kw in [{"top_k": 0}, {"top_k": -2}, {"top_p": 0.0}, {"top_p": 1.5}, {"temperature": -1.0},
           {"temperature": float("nan")}, {"max_new_tokens": -1}]:
    bad(f"generate {kw}", lambda kw=kw: generate(MODEL, TOKS[:1, :3], **{"temperature": 1.0, **kw}))

# -- CLI ---------------------------------------------------------------------------------------------------------------
from typer.testing import CliRunner  # noqa: E402

from mechscope.cli.main import app  # noqa: E402

RUNNER = CliRunner()
M = str(TMP / "good")
P = ["--clean", "a b", "--corrupted", "a c", "--answer", " x", "--wrong", " y"]
CLI = [["generate", M, "hi", "--top-k", "0"], ["generate", M, "hi", "--top-k", "abc"],
       ["generate", M, "hi", "--top-p", "1.5"], ["generate", M, "hi", "--top-p", "0"],
       ["generate", M, "hi", "--temperature", "-1"], ["heads", M, "--half-len", "0"], ["heads", M, "--half-len", "40"],
       ["heads", M, "--threads", "0"], ["heads", M, "--top", "-3"], ["heads", M, "--batch", "0"],
       ["dict", "eval", M, "--batch-size", "0"], ["dict", "harvest", "--hooks", "h", "--tokens", "0", "--out", "o"],
       ["dict", "train", "--activations", "a", "--out", "o", "--batch-size", "0"],
       ["induction", "train", "--out", "o", "--batch-size", "0"], ["induction", "analyze", "o", "--threads", "-2"],
       ["induction", "train", "--out", "o", "--curriculum-steps", "-1"],
       ["induction", "train", "--out", "o", "--cooldown-repeat-frac", "1.5"],
       ["grokking", "train", "--out", "o", "--threads", "0"], ["grokking", "train", "--out", "o", "--preset", "x"],
       ["info", M, "--pos", "0"], ["info", "no-such-model"], ["info", str(TMP)], ["info", ""], ["info"],
       ["patch", "run", *P, "--method", "exactly"], ["patch", *P, "--method", "bogus"],
       ["patch", "run", *P, "--sweep", "resid_pree", "--model", M], ["patch", "run", *P, "--direction", "up"],
       ["patch", "--model", M, "run", *P], ["patch", "--sweep", "z", "ioi"], ["no-such-command"],
       ["--bogus", "info", M], ["grokking", "analyze", str(TMP)], ["induction", "analyze", str(TMP)],
       ["dict", "eval", str(TMP)], ["superposition", "run", "--out", "o", "--threads", "-1"]]


def run_cli(argv: list[str]) -> tuple[str, bool]:
    signal.alarm(SECONDS)
    try:
        res = RUNNER.invoke(app, argv)
    finally:
        signal.alarm(0)
    if isinstance(res.exception, Overran):
        return "silent", False  # it ran (e.g. ignored a bad option) instead of refusing
    err = res.stderr if hasattr(res, "stderr") else res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return "generic", False
    if res.exit_code == 0:
        return "silent", False
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("loading ")]
    one = len(lines) == 1 and lines[0].startswith("error: ")
    return ("clear" if res.exit_code == 2 else "generic"), one


def main() -> None:
    results: dict[str, str] = {}
    for name, thunk, oracle in CASES:
        signal.alarm(SECONDS)
        try:
            out = thunk()
        except Overran:
            results[name] = "silent (ran)"
            continue
        except MechscopeError:
            results[name] = "clear"
        except Exception as e:  # noqa: BLE001
            results[name] = f"generic ({type(e).__name__})"
        else:
            results[name] = "silent" if oracle is None or not oracle(out) else "correct"
        finally:
            signal.alarm(0)
    one_line = 0
    for argv in CLI:
        kind, one = run_cli(argv)
        one_line += one
        results["CLI " + " ".join(a if len(a) < 30 else "<path>" for a in argv)] = kind
    counts = Counter(v.split(" ")[0] for v in results.values())
    print(json.dumps({"tried": len(results), "clear": counts["clear"], "correct": counts["correct"],
                      "generic": counts["generic"], "silent": counts["silent"], "cli_tried": len(CLI),
                      "cli_one_line": one_line, "source": mechscope.__file__,
                      "not_clear": {k: v for k, v in results.items() if v not in ("clear", "correct")}}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
