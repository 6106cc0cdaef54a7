"""The offline attention view: valid embedded data, escaping, shape checks."""

from __future__ import annotations

import json
import re

import pytest
import torch

from mechscope.errors import ShapeError
from mechscope.viz.attention import attention_html, attention_page


def _data(fragment: str) -> dict:
    m = re.search(r'<script type="application/json" class="data">(.*?)</script>', fragment, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_attention_html_embeds_patterns_and_escapes_tokens() -> None:
    pattern = torch.softmax(torch.randn(2, 3, 3).masked_fill(~torch.ones(3, 3, dtype=torch.bool).tril(), -1e9), -1)
    tokens = ["a", "</script><b>", "c"]
    frag = attention_html(tokens, pattern, labels=["L0.H0", "L1.H3"], title="x<y")
    data = _data(frag)
    assert data["tokens"] == tokens and data["labels"] == ["L0.H0", "L1.H3"]
    torch.testing.assert_close(torch.tensor(data["patterns"]), pattern, atol=1e-3, rtol=0)
    assert "<b>" not in frag.replace("<\\/script><b>", "")  # the token never becomes markup
    assert "x&lt;y" in frag and "http" not in frag  # no external resources
    ids = re.findall(r'class="msattn" id="(\w+)"', frag + attention_html(tokens, pattern))
    assert len(set(ids)) == 2


def test_attention_html_checks_shapes(tmp_path) -> None:
    with pytest.raises(ShapeError, match="n_heads"):
        attention_html(["a", "b"], torch.ones(1, 3, 3))
    with pytest.raises(ShapeError, match="labels"):
        attention_html(["a"], torch.ones(2, 1, 1), labels=["only one"])
    page = tmp_path / "p.html"
    attention_page(str(page), [attention_html(["a"], torch.ones(1, 1))])
    assert page.read_text().startswith("<!doctype html>")
