"""The assumptions that dominate a run's figures, said beside them.

Two weigh on the energy figure more than any other input a user may not have set:
the host's power with idle GPUs (non_gpu_idle_fraction, an assumption of the shipped
server catalog unless the scenario's catalog gives a measured value) and, without a
cooling model, the facility's fixed PUE.
"""

from __future__ import annotations

from dcsim.catalog import load_catalog
from dcsim.summary import RunSummary


def energy(resolved: dict, s: RunSummary) -> list[str]:
    """Sentences for the energy figure: host power share and facility overhead."""
    out = []
    own = {x["id"]: x for x in (resolved.get("catalog") or {}).get("servers", [])}
    shipped = load_catalog().servers
    types = sorted({g["type"] for r in (resolved.get("fleet") or {}).get("racks", [])
                    for g in r.get("servers", [])})
    assumed = []
    for t in types:
        if t in own:
            continue  # the user's own figures
        spec = shipped.get(t)
        if spec is not None and "assumption" in spec.source:
            assumed.append(f"{t} ({spec.non_gpu_idle_fraction:.0%})")
    it = s.total.it_energy_kwh
    if assumed and it > 0:
        share = s.total.host_and_psu_energy_kwh / it
        out.append(f"Hosts and power supplies drew {share:.0%} of IT energy. Host power "
                   f"with idle GPUs as a share of its full-load power is an assumption of "
                   f"the shipped catalog for {', '.join(assumed)}: set a measured "
                   "non_gpu_idle_fraction in the scenario's catalog.")
    fac = resolved.get("facility") or {}
    if fac.get("cooling") is None and s.total.facility_kwh > 0:
        out.append(f"Cooling and losses: a constant PUE of {fac.get('pue', 0):g} from the "
                   "scenario (no cooling model: facility.cooling).")
    return out
