"""Token tensors and selections: any input either runs or raises a ``MechscopeError`` (never an IndexError,
RuntimeError or a silent misreading: a boolean mask selects exactly where it is True)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from mechscope.interventions.apply import intervene
from mechscope.interventions.patching import patch_sweep
from mechscope.interventions.spec import Ablate
from mechscope.metrics import LogitDiff
from tests.helpers import tiny_model
from tests.typecheck import ill_typed

from .strategies import call, fast

MODEL = tiny_model("llama")  # d_vocab 50, n_ctx 32, 4 heads (2 kv), d_model 32, d_mlp 48
DTYPES = [torch.int64, torch.int32, torch.int16, torch.uint8, torch.bool, torch.float32, torch.float16]


@st.composite
def token_tensors(draw) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 40), min_size=0, max_size=3))
    dtype = draw(st.sampled_from(DTYPES))
    n = 1
    for s in shape:
        n *= s
    values = draw(st.lists(st.integers(-3, 60), min_size=n, max_size=n)) if n <= 400 else [1] * n
    return torch.tensor(values, dtype=torch.int64).reshape(shape).to(dtype)


@fast(60)
@given(token_tensors())
def test_forward_on_any_token_tensor(tokens: torch.Tensor) -> None:
    with torch.no_grad():
        logits, msg = call(lambda: MODEL(tokens))
    if msg is None:
        assert logits.shape[-1] == 50 and torch.isfinite(logits).all()


INDEX = st.one_of(
    st.none(),
    st.lists(st.integers(-8, 8), max_size=5),
    st.lists(st.booleans(), min_size=1, max_size=8),
    st.lists(st.floats(-3, 3), min_size=1, max_size=3),
    st.integers(-5, 5),
    st.text(max_size=3),
    st.lists(st.lists(st.integers(0, 2), max_size=2), min_size=1, max_size=2),
)
HOOKS = ["blocks.0.attn.hook_z", "blocks.1.hook_resid_post", "blocks.0.mlp.hook_post", "blocks.1.attn.hook_pattern",
         "blocks.0.attn.hook_k"]


@st.composite
def selections(draw):
    sel = {k: draw(INDEX) for k in ("rows", "positions", "heads", "neurons")}
    as_tensor = {k: draw(st.booleans()) for k in sel}
    for k, v in sel.items():
        if as_tensor[k] and isinstance(v, list) and v and not isinstance(v[0], list):
            sel[k] = torch.tensor(v)
    return draw(st.sampled_from(HOOKS)), sel


def _expected(idx, size):
    """What a valid selection means: the set of indices selected along an axis of ``size``."""
    if idx is None:
        return set(range(size))
    vals = idx.tolist() if isinstance(idx, torch.Tensor) else ([idx] if isinstance(idx, int) else idx)
    if vals and all(isinstance(v, bool) for v in vals):
        return {i for i, v in enumerate(vals) if v}
    return {v % size for v in vals}


@fast(80)
@given(selections())
def test_selections_select_what_they_say(case) -> None:
    hook, sel = case
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
    _, cache = MODEL.run_with_cache(tokens, names=[hook])
    seen = {}

    def run():
        spec = Ablate(hook=hook, **sel)
        with torch.no_grad(), intervene(MODEL, [spec]), \
                MODEL.hooks(fwd=[(hook, lambda x, h: seen.setdefault("x", x))]):
            MODEL(tokens)

    with ill_typed():
        _, msg = call(run)
    if msg is not None:
        return
    x, ref = seen["x"], cache[hook]
    zeroed = (x == 0) & (ref != 0)
    axes = {"rows": 0, "positions": 1, "heads": 2 if hook.endswith(("hook_z", "hook_k", "hook_pattern")) else None,
            "neurons": x.dim() - 1}
    for what, axis in axes.items():
        if axis is None or sel[what] is None:
            continue
        outside = set(range(x.shape[axis])) - _expected(sel[what], x.shape[axis])
        if outside:  # nothing outside the selection changed
            idx = torch.tensor(sorted(outside))
            assert torch.equal(x.index_select(axis, idx), ref.index_select(axis, idx)), (what, sel[what])
    assert zeroed.any() or (x == ref).all() or (x == 0).all()


METRIC = LogitDiff(torch.tensor([1, 2]), torch.tensor([3, 4]))
CLEAN = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
CORRUPT = torch.tensor([[1, 2, 9, 4, 5], [6, 7, 1, 9, 10]])


@fast(40)
@given(st.one_of(st.none(), st.lists(st.integers(-7, 7), max_size=3)),
       st.one_of(st.none(), st.lists(st.integers(-2, 3), max_size=2)),
       st.one_of(st.integers(-7, 7), st.lists(st.integers(-6, 6), min_size=1, max_size=3)),
       st.sampled_from(["resid_pre", "z", "attn_out", "pattern"]))
def test_patch_sweep_arguments(positions, layers, readout, sweep) -> None:
    rd = torch.tensor(readout) if isinstance(readout, list) else readout
    with ill_typed():
        res, msg = call(lambda: patch_sweep(MODEL, CLEAN, CORRUPT, METRIC, sweep, positions=positions, layers=layers,
                                            readout=rd))
    if msg is None:
        assert torch.isfinite(res.values).all()
