"""Request bodies of the web app's POST endpoints (pydantic models, validated by FastAPI)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PromptIn(BaseModel):
    """``POST /api/prompt``."""

    text: str = Field(max_length=4000)
    top_k: int = Field(default=5, ge=1, le=20)


class SteerIn(BaseModel):
    """``POST /api/steer``."""

    prompt: str = Field(max_length=2000)
    dictionary: str
    feature: int = Field(ge=0)
    mode: str = "add"
    value: float = 8.0
    max_new_tokens: int = Field(default=20, ge=1, le=64)
