"""Base class for every scenario model: frozen, unknown fields rejected."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Frozen pydantic model that forbids unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
