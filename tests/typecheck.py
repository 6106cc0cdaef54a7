"""Runtime type checking in tests: letting a test make a deliberately ill-typed call.

Under pytest every function and dataclass of ``mechscope`` is checked at call time against its annotations
(jaxtyping shapes and dtypes, ``Literal`` choices, ...; see "Runtime shape checking" in docs/design.md).
Some tests call mechscope *wrongly on purpose* to check its own validation, the actionable
``ConfigError`` / ``ShapeError`` / ``TokenError`` an untyped caller (the CLI, a JSON config, a notebook)
gets. The checker would reject those calls first, with its own error. :func:`ill_typed` switches the
checker off for just that call, the runtime counterpart of the ``# type: ignore[arg-type]`` such calls
carry for mypy::

    with pytest.raises(ConfigError, match="tokenizer"), ill_typed():
        CorpusConfig(tokenizer="gpt2")  # type: ignore[arg-type]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import jaxtyping


@contextmanager
def ill_typed() -> Iterator[None]:
    """Run the block with jaxtyping/beartype checks off (a no-op when the suite runs without them)."""
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)
