"""Runtime shape checking is on under pytest (DESIGN principle 10), and ``ill_typed()`` opts a call out.

The checker is switched on by ``--jaxtyping-packages`` in pyproject's pytest ``addopts`` (see "Runtime
shape checking" in docs/design.md); these tests fail if that ever silently stops applying to mechscope.
"""

from __future__ import annotations

import jaxtyping
import pytest
import torch

from mechscope.errors import ShapeError, TokenError
from mechscope.tokens import Tokenizer
from tests.typecheck import ill_typed

_OFF = "runtime type checking is off: pytest must run with --jaxtyping-packages=mechscope,... (pyproject addopts)"


def _tok() -> Tokenizer:
    return Tokenizer.integers(5)


def test_wrong_rank_is_caught_by_the_checker_before_the_function_runs() -> None:
    tokens = torch.tensor([1, 2, 3])  # [pos], the annotation says Int[Tensor, "batch pos"]
    try:
        _tok().decode_batch(tokens)
    except jaxtyping.TypeCheckError as e:
        assert "batch pos" in str(e)
    except ShapeError:
        pytest.fail(_OFF)
    else:
        pytest.fail("decode_batch accepted a 1-D tensor")


def test_dimension_names_are_consistent_across_arguments() -> None:
    tokens = torch.zeros(2, 3, dtype=torch.long)
    mask = torch.ones(2, 4, dtype=torch.long)  # `pos` is 3 in tokens, 4 here
    with pytest.raises((jaxtyping.TypeCheckError, ShapeError)) as info:
        _tok().decode_batch(tokens, mask)
    assert info.type is jaxtyping.TypeCheckError, _OFF


def test_dtype_is_checked() -> None:
    with pytest.raises((jaxtyping.TypeCheckError, TokenError)) as info:
        _tok().decode_batch(torch.zeros(1, 3))  # float ids; the annotation says Int
    assert info.type is jaxtyping.TypeCheckError, _OFF


def test_ill_typed_turns_the_checker_off_for_the_block_only() -> None:
    with pytest.raises(ShapeError, match=r"\[batch, pos\]"), ill_typed():
        _tok().decode_batch(torch.tensor([1, 2, 3]))  # mechscope's own check answers
    assert not jaxtyping.config.jaxtyping_disable
    with pytest.raises(RuntimeError), ill_typed():
        raise RuntimeError("the block fails")
    assert not jaxtyping.config.jaxtyping_disable  # restored after an exception too
    with pytest.raises(jaxtyping.TypeCheckError):
        _tok().decode_batch(torch.tensor([1, 2, 3]))
