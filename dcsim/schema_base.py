"""Base class for every scenario model: frozen, unknown fields rejected, numbers finite."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Frozen pydantic model that forbids unknown fields and infinite or NaN numbers (no
    physical quantity of a scenario is infinite; .inf in YAML is a mistake)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
