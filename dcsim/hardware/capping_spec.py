"""Scenario schema of how power budgets are enforced: a static worst-case cap, or a
run-time power-capping controller that lets servers run at their own limits and caps
a domain only when its measured draw nears its budget (power oversubscription)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from dcsim.schema_base import Spec

# Assumptions, stated as such, for a site's capping policy: caps engage at 90 % of the
# budget and lift below 80 % (POLCA-style thresholds leave headroom for the rise while
# the cap takes effect); rack and PDU telemetry reports means over about a second;
# reading it and setting a new limit through the BMC or NVML take about two seconds;
# a cap lifts after 30 s whose mean draw stayed below the release share.
CAP_AT_FRACTION = 0.9
RELEASE_BELOW_FRACTION = 0.8
WINDOW_S = 1.0
REACTION_S = 2.0
HOLD_S = 30.0


class StaticCapping(Spec):
    """Budgets hold by construction: a domain whose worst case (every GPU at its limit,
    hosts at full load) exceeds its budget runs with lower limits for the whole run."""

    kind: Literal["static"] = "static"


class CappingController(Spec):
    """A power-capping controller per budgeted rack, row and the facility.

    Serving GPUs run at the limits their deployments ask for. When a domain's draw,
    averaged over window_s, reaches cap_at_fraction of its budget, its serving GPUs get
    the limit the static scheme would give them (so its worst case fits) reaction_s
    later; while capped, a fall of the draw below release_below_fraction starts a span of
    hold_s, and the limits lift at its end if its mean draw stayed below. A start of
    work that would push a domain over its budget brakes it at once (the GPUs' hardware
    power brake): the work in flight continues under the lower limit from that instant.
    """

    kind: Literal["controller"]
    cap_at_fraction: float = Field(
        default=CAP_AT_FRACTION, gt=0, le=1, description="Measured draw, as a share of the "
        "budget, at which the controller caps a domain (an assumption unless set).")
    release_below_fraction: float = Field(
        default=RELEASE_BELOW_FRACTION, gt=0, lt=1, description="Share of the budget the "
        "mean draw over a hold span must stay below for the cap to lift (an assumption "
        "unless set).")
    window_s: float = Field(
        default=WINDOW_S, gt=0, le=600, description="Telemetry averaging window: the mean "
        "draw over it, from a crossing of cap_at_fraction, decides a cap, s (an assumption "
        "unless set).")
    reaction_s: float = Field(
        default=REACTION_S, ge=0, le=600, description="Time from the measured crossing to "
        "the lower limits in force (telemetry plus actuation), s; an assumption unless set.")
    hold_s: float = Field(
        default=HOLD_S, gt=0, le=86400, description="A fall of the capped draw below the "
        "release share starts a span this long; the cap lifts at its end if the span's mean "
        "draw stayed below it, s (an assumption unless set).")

    @model_validator(mode="after")
    def _hysteresis(self) -> CappingController:
        if self.release_below_fraction >= self.cap_at_fraction:
            raise ValueError(
                f"release_below_fraction ({self.release_below_fraction:g}) must be below "
                f"cap_at_fraction ({self.cap_at_fraction:g}): the cap lifts only well under "
                "the level that sets it")
        return self


PowerCapping = Annotated[StaticCapping | CappingController, Field(discriminator="kind")]
