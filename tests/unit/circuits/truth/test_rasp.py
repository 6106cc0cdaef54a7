"""The RASP compiler: every program computes its reference semantics on its whole domain; edges are named
like ``circuits/graph.py`` and carry exactly the effect the compiler says."""

from __future__ import annotations

import re

import pytest
import torch

from mechscope.circuits.truth.rasp import lang as r
from mechscope.circuits.truth.rasp.compiler import compile_program
from mechscope.circuits.truth.rasp.programs import PROGRAMS, get_program
from mechscope.circuits.truth.rasp.truth import compile_named
from mechscope.errors import ConfigError, TokenError

EDGE = re.compile(r"^(input|a\d+\.h\d+|m\d+)->(a\d+\.h\d+<[qkv]>|m\d+|logits)$")


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_compiled_program_computes_its_program_on_the_whole_domain(name):
    prog = get_program(name)
    comp, domain = compile_named(name)
    with torch.no_grad():
        decoded = comp.decode(comp.model(comp.encode(domain)))
    checked = 0
    for xs, got in zip(domain, decoded):
        want = r.evaluate(prog.output, xs)
        for w, g in zip(want, got):
            if w is r.UNDEFINED:
                continue
            checked += 1
            if prog.output.encoding == "numerical":
                assert abs(w - g) < 1e-3, (name, xs, want, got)
            else:
                assert w == g, (name, xs, want, got)
    assert checked >= 0.8 * len(domain) * prog.max_len  # few positions are undefined


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_edges_use_the_graph_naming_and_are_part_of_the_wiring(name):
    comp, _ = compile_named(name)
    assert comp.edges and comp.edges <= comp.wiring
    assert all(EDGE.match(e) for e in comp.wiring), sorted(comp.wiring)
    assert any(e.endswith("->logits") for e in comp.edges)


def test_composition_edges_are_where_the_program_says():
    assert compile_named("induction")[0].edges == {
        "input->a0.h0<v>", "a0.h0->a1.h0<k>", "input->a1.h0<q>", "input->a1.h0<v>", "a1.h0->logits"}
    assert "a0.h0->a1.h0<q>" in compile_named("pointer")[0].edges  # Q-composition
    assert "a0.h0->a1.h0<v>" in compile_named("shift2")[0].edges  # V-composition
    # positions are the same in clean and corrupted runs: the previous-token head's Q/K reads are wiring only
    comp = compile_named("shift2")[0]
    assert "input->a0.h0<q>" in comp.wiring and "input->a0.h0<q>" not in comp.edges


def test_layers_heads_and_mlps_follow_the_program():
    comp, _ = compile_named("repeat_count")  # SelectorWidth head + decode MLP in block 0, the Map in MLP 1
    assert comp.model.cfg.n_layers == 2 and comp.model.cfg.n_heads == 1
    assert float(comp.model.blocks[1].attn.W_Q.detach().abs().sum()) == 0.0  # attention of block 1 is unused
    assert comp.model.cfg.norm.kind == "none"


def test_two_aggregates_at_one_depth_share_a_layer_as_two_heads():
    x, idx = r.tokens((0, 1)), r.indices(3)
    a = r.aggregate(r.Select(idx, idx, lambda k, q: k == q - 1), x, label="a", max_len=3)
    b = r.aggregate(r.Select(idx, idx, lambda k, q: k == 0), x, label="b", max_len=3)
    out = r.sequence_map(lambda u, v: u * 2 + v, a, b, label="out")
    comp = compile_program(out, vocab=(0, 1), max_len=3)
    assert comp.model.cfg.n_heads == 2 and comp.model.cfg.n_layers == 1
    assert {"a0.h0->m0", "a0.h1->m0", "m0->logits"} <= comp.edges
    with torch.no_grad():
        got = comp.decode(comp.model(comp.encode([(1, 0, 1)])))[0]
    assert got == r.evaluate(out, (1, 0, 1)) == [None, 3, 1]


def test_bad_programs_and_inputs_get_clear_errors():
    with pytest.raises(ConfigError, match="Did you mean: hist"):
        get_program("hsit")
    x = r.tokens((0, 1))
    num = r.map_(float, x, label="num", encoding="numerical")
    with pytest.raises(ConfigError, match="categorical"):
        r.Select(num, x, lambda k, q: True)
    with pytest.raises(ConfigError, match="vocab"):
        compile_program(r.map_(lambda v: v, x, label="m"), vocab=(0, 1, 2), max_len=2)
    comp, _ = compile_named("hist")
    with pytest.raises(TokenError, match="vocabulary"):
        comp.encode([(0, 1, 7, 0, 1)])
    with pytest.raises(TokenError, match="max_len"):
        comp.encode([(0,) * 9])
