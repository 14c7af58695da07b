"""The report of a `dcsim size` folder: the fleet in GPUs, MW and money, how simulation
confirmed it, what the money rests on, and when the site runs out as demand grows."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dcsim import units as u
from dcsim.report.figures_run import COLORS


def headline(s: dict) -> list[tuple[str, str, str]]:
    """Cards: GPUs, servers and racks, MW, energy, carbon and money per year."""
    gpus = ", ".join(f"{u.count(n)} {g}" for g, n in s["gpus"].items()) or "none"
    servers = sum(s["servers"].values())
    cards = [("GPUs", gpus, "sizing MILP, confirmed by simulation at the peak"),
             ("servers and racks", f"{_n(servers, 'server')}, {_n(s['racks'], 'rack')}",
              "the scenario's rack design"),
             ("facility power at peak", u.power_w(s["facility_peak_mw"] * 1e6),
              f"predicted; IT {u.power_w(s['it_peak_mw'] * 1e6)}, nameplate "
              f"{u.power_w(s['nameplate_mw'] * 1e6)}"),
             ("facility energy a year", u.energy_kwh(s["energy_mwh_per_year"] * 1e3),
              "the horizon's periods, repeated over a year")]
    if s.get("carbon_t_per_year") is not None:
        cards.append(("carbon a year", u.mass_kg(s["carbon_t_per_year"] * 1e3),
                      "facility.grid carbon intensity"))
    priced = "" if s["tco_includes_electricity"] else " (electricity not priced)"
    cards.append(("cost of ownership a year", u.money_usd(s["tco_usd_per_year"]),
                  f"capex amortised + electricity{priced}; see the cost table"))
    if s.get("usd_per_million_tokens") is not None:
        cards.append(("per million tokens", u.money_usd(s["usd_per_million_tokens"]),
                      "prompt + output tokens of the sized demand"))
    return cards


def _n(k: int, what: str) -> str:
    return f"{u.count(k)} {what}{'' if k == 1 else 's'}"


def growth(g: pd.DataFrame) -> go.Figure:
    """Per resource, need month by month against what the scenario has."""
    fig = go.Figure()
    for i, (res, r) in enumerate(g.groupby("resource", sort=False)):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Scatter(x=r["month"], y=r["need"], name=f"{res}: need",
                                 mode="lines+markers", line={"color": color, "shape": "hv"}))
        fig.add_trace(go.Scatter(x=r["month"], y=r["have"], name=f"{res}: have",
                                 mode="lines", line={"color": color, "dash": "dash"}))
    fig.update_layout(title="Need as demand grows, against what the site has",
                      xaxis_title="months from now", yaxis_title="count (kW for power)")
    return fig


CHECK_COLUMNS = {"service": "service", "peak_rps": "peak req/s", "configs": "replicas at peak",
                 "gpus": "GPUs", "ttft_p99_s": "TTFT p99 (s)", "tpot_p99_s": "TPOT p99 (s)",
                 "meets_slo": "meets SLO", "one_fewer_meets_slo": "one fewer meets SLO",
                 "one_fewer_slo_attainment": "one fewer: SLO attainment",
                 "added_by_simulation": "added by simulation",
                 "removed_by_simulation": "removed by simulation"}
CAPEX_COLUMNS = {"item": "item", "count": "count", "per": "per", "unit_capex_usd": "unit USD",
                 "capex_usd": "capex USD", "amortisation_years": "years",
                 "usd_per_year": "USD a year", "provenance": "provenance", "source": "source"}


FLEET_COLUMNS = {"gpu": "GPU", "gpus": "GPUs", "server": "server", "servers": "servers",
                 "servers_per_rack": "servers per rack", "racks": "racks",
                 "rack_design": "rack design", "rack_budget_kw": "rack budget (kW)",
                 "nameplate_kw": "nameplate (kW)"}
RUNOUT_COLUMNS = {"resource": "resource", "have": "have", "need_now": "need now",
                  "need_at_horizon": "need at the horizon",
                  "runs_out_month": "runs out in month", "add_by_horizon": "add by the horizon"}
MONEY = ("unit_capex_usd", "capex_usd", "usd_per_year")


def named(df: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """The table's columns that have a reader's name, renamed; money as dollars."""
    df = df.copy()
    for c in MONEY:
        if c in df:
            df[c] = df[c].map(u.money_usd)
    return df[[c for c in names if c in df]].rename(columns=names)
