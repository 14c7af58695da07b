"""Capital cost of a sized fleet and its cost of ownership per year.

Shipped unit costs (dcsim/catalog/data/costs.csv) are per server type, per rack and
per kW of facility capacity, each with its source: *published* (a list price),
*published estimate* (an analyst's figure) or *assumption* (ours, to be replaced by
the user's quote). A scenario's `sizing.capex_usd` / `sizing.amortisation_years`
replace any of them and are labelled *scenario*.

  capex per year = sum over items of count x unit capex / amortisation years
  cost of ownership per year = capex per year + electricity per year
  per million tokens = cost of ownership per year / (tokens per year / 1e6)
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from dcsim.errors import DcsimError, Problem

SERVER_YEARS = 5.0  # amortisation of a server the cost table lacks, unless given


def unit_costs(capex_usd: dict[str, float], years: dict[str, float],
               servers: set[str] | frozenset[str] = frozenset()) -> pd.DataFrame:
    """The shipped unit costs with the scenario's overrides: item, kind, capex_usd, per,
    amortisation_years, source, provenance. A server of the catalog (`servers`) the
    table lacks, e.g. one of the scenario's own, may be given a price."""
    with resources.files("dcsim.catalog").joinpath("data/costs.csv").open() as f:
        t = pd.read_csv(f)
    t["provenance"] = t["source"].str.split(":").str[0]
    new = sorted(set(capex_usd) - set(t["item"]) & set(servers))
    t = pd.concat([t, pd.DataFrame([{
        "item": k, "kind": "server", "capex_usd": capex_usd[k], "per": "server",
        "amortisation_years": SERVER_YEARS, "source": f"scenario: sizing.capex_usd.{k}",
        "provenance": "scenario"} for k in new])], ignore_index=True) if new else t
    for field, given in (("capex_usd", capex_usd), ("amortisation_years", years)):
        unknown = sorted(set(given) - set(t["item"]))
        if unknown:
            raise DcsimError(Problem(f"sizing.{field}", unknown, "items of the cost table ("
                                     + ", ".join(t["item"]) + ") or servers of the catalog"))
        for item, v in given.items():
            row = t["item"] == item
            t.loc[row, field] = float(v)
            t.loc[row, "source"] = f"scenario: sizing.{field}.{item}"
            t.loc[row, "provenance"] = "scenario"
    return t


def capex_rows(servers: dict[str, int], racks: int, facility_kw: float,
               costs: pd.DataFrame) -> pd.DataFrame:
    """Per item of the fleet: count, unit capex, total, per year and source."""
    c = costs.set_index("item")
    items = [(sid, n) for sid, n in sorted(servers.items()) if n > 0]
    items += [("rack", racks), ("facility", facility_kw)]
    rows = []
    for item, n in items:
        if item not in c.index:
            raise DcsimError(Problem("sizing.capex_usd", item, "a unit cost for every server "
                                     "type the sized fleet uses (set sizing.capex_usd)"))
        r = c.loc[item]
        total = float(n) * float(r["capex_usd"])
        rows.append({"item": item, "count": float(n), "per": r["per"],
                     "unit_capex_usd": float(r["capex_usd"]), "capex_usd": total,
                     "amortisation_years": float(r["amortisation_years"]),
                     "usd_per_year": total / float(r["amortisation_years"]),
                     "provenance": r["provenance"], "source": r["source"]})
    return pd.DataFrame(rows)


def ownership(capex: pd.DataFrame, electricity_usd_per_year: float | None,
              tokens_per_year: float) -> dict[str, float | None]:
    """Capital cost, its yearly share, cost of ownership per year and per million tokens
    (electricity left out, and said so, when the scenario has no price)."""
    per_year = float(capex["usd_per_year"].sum())
    tco = per_year + (electricity_usd_per_year or 0.0)
    return {"capex_usd": float(capex["capex_usd"].sum()), "capex_usd_per_year": per_year,
            "electricity_usd_per_year": electricity_usd_per_year,
            "tco_usd_per_year": tco, "tco_includes_electricity": electricity_usd_per_year
            is not None, "usd_per_million_tokens": tco / (tokens_per_year / 1e6)
            if tokens_per_year > 0 else None}
