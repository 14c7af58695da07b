"""Server, rack, row and facility power: bookkeeping, budgets, their enforcement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.hardware.server import psu_efficiency
from dcsim.power_summary import domain_peaks, energy_split
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]


def _scenario(rack_kw: float = 40.0, rate_scale: float = 3.0, duration: float = 240.0) -> dict:
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    d["simulation"] = {"duration_s": duration, "seed": 4, "time_bucket_s": 20}
    d["workloads"][0]["arrival"]["rate_scale"] = rate_scale
    d["workloads"][0]["deployment"]["replicas"] = 8
    d["fleet"]["racks"][0]["power_budget_kw"] = rack_kw
    return d


@pytest.fixture(scope="module")
def free_run():
    return simulate(scenario_from_data(_scenario()))


def _energy(p, domain: str) -> float:
    sel = p["domain"] == domain
    return float((p.loc[sel, "power_w"] * (p.loc[sel, "t_end_s"] - p.loc[sel, "t_start_s"])).sum())


def test_energy_adds_up_from_gpus_to_the_facility(free_run):
    p, reps = free_run.power, free_run.replicas
    # GPUs: the replicas' energy (every GPU of this fleet serves)
    assert _energy(p, "gpu") == pytest.approx(reps["energy_j"].sum(), rel=1e-9)
    # servers: GPUs + host + PSU loss; racks, rows and the facility add servers up
    srv = p[p["domain"] == "server"]
    assert _energy(p, "server") > _energy(p, "gpu")
    assert (srv["losses_w"] > 0).all()
    for dom in ("rack", "row"):
        assert _energy(p, dom) == pytest.approx(_energy(p, "server"), rel=1e-9)
    # the facility's IT load is the servers plus the switch ports
    assert _energy(p, "network") > 0
    assert _energy(p, "facility") == pytest.approx(_energy(p, "server") + _energy(p, "network"),
                                                   rel=1e-9)
    split = energy_split(p)
    # constant PUE: facility = IT x PUE, exactly; facility = IT + cooling + losses
    assert split["facility_kwh"] == pytest.approx(split["it_energy_kwh"] * 1.3, rel=1e-12)
    assert split["facility_kwh"] == pytest.approx(
        split["it_energy_kwh"] + split["cooling_kwh"] + split["losses_kwh"], rel=1e-12)


def test_psu_curve_is_the_80_plus_titanium_minimum():
    assert psu_efficiency(np.array([0.1, 0.2, 0.5, 1.0])).tolist() == [0.90, 0.94, 0.96, 0.91]


def test_rack_budget_is_enforced_by_gpu_limits(free_run):
    tight = simulate(scenario_from_data(_scenario(rack_kw=8.5)))
    b = tight.budgets.set_index("domain").loc["rack"]
    assert b["throttled"] and b["gpu_limit_w"] < 700
    assert b["worst_case_w"] <= 8500 + 1e-6
    rack = tight.power[tight.power["domain"] == "rack"]
    assert rack["power_w"].max() <= 8500
    assert (tight.replicas["power_cap_w"] == b["gpu_limit_w"]).all()
    # the throttled replicas are slower than the free ones
    assert tight.requests["tpot_s"].median() > free_run.requests["tpot_s"].median()
    peaks = {d["domain"]: d for d in domain_peaks(tight.power, tight.budgets)}
    assert peaks["rack"]["throttled"] and peaks["rack"]["headroom_w"] >= 0


def test_headroom_and_extra_servers(free_run):
    rack = next(d for d in domain_peaks(free_run.power, free_run.budgets) if d["domain"] == "rack")
    assert rack["stranded_w"] == pytest.approx(40000 - rack["peak_w"])
    per_server = rack["p99_w"] / rack["servers"]
    assert rack["extra_servers_at_p99"] == int((40000 - rack["p99_w"]) // per_server)


def test_budget_below_the_lowest_limits_is_a_clear_error():
    with pytest.raises(DcsimError, match=r"rack inference-rack power budget.*at least"):
        simulate(scenario_from_data(_scenario(rack_kw=3.0)))


def test_row_and_facility_budgets_apply_after_racks():
    d = _scenario()
    d["fleet"]["rows"] = [{"name": "row-1", "power_budget_kw": 9.0}]
    r = simulate(scenario_from_data(d))
    b = r.budgets.set_index("domain")
    assert not b.loc["rack", "throttled"] or b.loc["rack", "worst_case_w"] <= 40000
    assert b.loc["row", "throttled"] and b.loc["row", "worst_case_w"] <= 9000 + 1e-6


def test_throttled_replica_slows_down_exactly_as_the_model_says(tmp_path, store):
    trace = tmp_path / "one.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0,2048,32\n")
    d = _scenario(rack_kw=8.5)
    d["workloads"][0]["arrival"] = {"kind": "trace", "path": str(trace)}
    r = simulate(scenario_from_data(d))
    cap = float(r.replicas["power_cap_w"].iloc[0])
    req = r.requests.iloc[0]
    pre = store.query("H200-SXM", "llama-3.1-8b", "prefill", 1, 2048, power_cap_w=cap)
    dec = sum(store.query("H200-SXM", "llama-3.1-8b", "decode", 1, 2048 + j,
                          power_cap_w=cap).latency_ms for j in range(31))
    assert req["ttft_s"] == pytest.approx(pre.latency_ms / 1e3, rel=1e-4)
    assert req["e2e_s"] - req["ttft_s"] == pytest.approx(dec / 1e3, rel=1e-3)
    slow = r.replicas["cap_slowdown_prefill"].iloc[0]
    free = store.query("H200-SXM", "llama-3.1-8b", "prefill", 1, 2048)
    assert slow == pytest.approx(pre.latency_ms / free.latency_ms) and slow > 1


def test_zero_budget_is_a_schema_error():
    from dcsim.errors import DcsimError as Err

    with pytest.raises(Err, match=r"fleet\.racks\[0\]\.power_budget_kw: got 0"):
        scenario_from_data(_scenario(rack_kw=0))
