"""Numbers as a planner reads them: one prefix that keeps three significant digits,
thousands separators, durations in the largest unit that fits. Every terminal line
formats through these (the files keep SI base units in their column names)."""

from __future__ import annotations

import math

_ENERGY = ((1e6, "GWh"), (1e3, "MWh"), (1.0, "kWh"), (1e-3, "Wh"))
_POWER = ((1e9, "GW"), (1e6, "MW"), (1e3, "kW"), (1.0, "W"))


def _scaled(x: float, steps: tuple[tuple[float, str], ...]) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for size, unit in steps:
        if abs(x) >= size:
            return f"{x / size:,.3g} {unit}"
    size, unit = steps[-1]
    return f"{x / size:.3g} {unit}"


def energy_kwh(x: float) -> str:
    """Energy given in kWh: 3,450 -> '3.45 MWh', 0.07 -> '70 Wh'."""
    return _scaled(x, _ENERGY)


def power_w(x: float) -> str:
    """Power given in W: 37,300 -> '37.3 kW', 1.2e6 -> '1.2 MW'."""
    return _scaled(x, _POWER)


def duration_s(x: float) -> str:
    """A duration given in s: under a second in ms, then s, min, h, days."""
    if x is None or not math.isfinite(x):
        return "-"
    for size, unit in ((86400.0, "days"), (3600.0, "h"), (60.0, "min"), (1.0, "s")):
        if abs(x) >= size:
            text = f"{x / size:,.3g}"
            return f"{text} {'day' if unit == 'days' and text == '1' else unit}"
    return f"{x * 1e3:.3g} ms" if x else "0 s"


def count(x: float) -> str:
    """A count with thousands separators; large ones with a prefix: 1.15e10 -> '11.5 G'."""
    if x is None or not math.isfinite(x):
        return "-"
    for size, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(x) >= size:
            return f"{x / size:.3g} {unit}"
    return f"{round(x):,}"


def money_usd(x: float) -> str:
    """US dollars: cents below $100, whole dollars with separators above."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"${x:,.2f}" if abs(x) < 100 else f"${x:,.0f}"


def mass_kg(x: float) -> str:
    """A mass given in kg: tonnes from 1,000 kg (whole tonnes with separators from
    1,000 t)."""
    if x is None or not math.isfinite(x):
        return "-"
    if abs(x) >= 1e6:
        return f"{x / 1e3:,.0f} t"
    return f"{x / 1e3:,.3g} t" if abs(x) >= 1e3 else f"{x:,.3g} kg"


def capping_line(c: dict) -> str:
    """One budgeted domain the power-capping controller watched (summary.json's
    power_capping entry): time capped, caps, brakes, metered peak against the budget
    (the supply's: the range of its hourly budgets)."""
    lo, hi = c["budget_w"], c.get("budget_max_w", c["budget_w"])
    budget = power_w(lo) if hi <= lo else f"{power_w(lo)}-{power_w(hi)} (by the hour)"
    return (f"{c['kind']} {c['name']}: capped {c['capped_share']:.1%} of the run "
            f"({c['caps']} caps, {c['brakes']} brakes); metered peak "
            f"{power_w(c['peak_w'])} of {budget}")


def data_gb(x: float) -> str:
    """Bytes given in GB (1e9), in GB, TB or PB with three digits."""
    return _scaled(x, ((1e6, "PB"), (1e3, "TB"), (1.0, "GB")))


def pools_line(name: str, pools: dict) -> str:
    """One line on a disaggregated service's pools and KV moves (summary `pools`)."""
    parts = [f"{k} {v['replicas']:g} replicas ({v['gpus']:g} GPUs) {v['busy_fraction']:.0%} "
             f"busy, {power_w(v['mean_power_w'])}" for k, v in pools.items()
             if k != "kv_transfer"]
    kv = pools.get("kv_transfer", {})
    moved = (f"; KV {data_gb(kv['kv_gb'])} over {count(kv['requests_moved'])} requests, "
             f"transfer p99 {duration_s(kv['transfer_p99_s'])}, decode wait p99 "
             f"{duration_s(kv['wait_p99_s'])}") if kv.get("requests_moved") else ""
    return f"{name}: " + "; ".join(parts) + moved
