"""Deployments that change over time: schedules, autoscalers, cold starts, drains and
servers switching on and off (dcsim.engine.scaling, scaler, lifecycle)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_helpers import chat_service

from dcsim import api
from dcsim.catalog import load_catalog
from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.scenario import scenario_from_data


def scaled(scaling: dict, rate: float = 10.0, replicas: int = 2, tp: int = 8,
           duration_s: float = 600.0, servers: int = 2, boot_s: float = 50.0,
           off_after_s: float = 30.0, unused: str = "switched_off", seed: int = 5,
           arrival: dict | None = None, routing: str = "least_outstanding") -> dict:
    """A chat service on H200 servers (one tp=8 replica a server) with `scaling`."""
    svc = chat_service(rate, replicas)
    svc["deployment"]["tp"] = tp
    svc["scaling"] = scaling
    svc["routing"] = routing
    if arrival is not None:
        svc["arrival"] = arrival
    return {"name": "scaling", "workloads": [svc],
            "fleet": {"unused_servers": unused, "server_boot_s": boot_s,
                      "server_off_after_s": off_after_s,
                      "racks": [{"name": "r", "power_budget_kw": 12 * servers,
                                 "servers": [{"type": "dgx-h200", "count": servers}]}]},
            "simulation": {"duration_s": duration_s, "seed": seed, "time_bucket_s": 30.0}}


def schedule(*steps: tuple[float, int], warmup_s: float = 10.0, **extra: dict) -> dict:
    return {"kind": "schedule", "warmup_s": warmup_s,
            "steps": [{"at_s": t, "replicas": n, **extra.get(str(k), {})}
                      for k, (t, n) in enumerate(steps)]}


def run(data: dict) -> api.Results:
    return api.run(scenario_from_data(data))


def events(res: api.Results, kind: str) -> pd.DataFrame:
    sc = res.table("scaling")
    return sc[sc["event"] == kind]


def weight_load_s() -> float:
    """Llama-3.1-8B in BF16 (2 bytes a parameter) over one server's file-system client
    limit (5 GB/s by default, below the 100 GB/s the pool reads)."""
    params = load_catalog().model("llama-3.1-8b").published_params
    assert params is not None
    return params * 2 / 5e9


def test_a_cold_start_takes_boot_load_and_warmup_before_its_first_request() -> None:
    res = run(scaled(schedule((0, 1), (100, 2)), rate=20.0))
    ready = events(res, "ready")
    assert len(ready) == 1 and ready["replica"].iloc[0] == 1
    by_hand = 100 + 50 + weight_load_s() + 10  # boot, weights, warm-up
    assert ready["t_s"].iloc[0] == pytest.approx(by_hand, rel=2e-3)  # params vs the shapes
    first = res.requests[res.requests["replica"] == 1]["first_token_s"].min()
    assert first >= ready["t_s"].iloc[0]
    # while it loaded, requests queued at the one warm replica: none went to replica 1
    early = res.requests[(res.requests["arrival_s"] < 100 + 50)]
    assert (early["replica"] == 0).all()


def test_a_drain_loses_no_request_and_ends_with_the_last_of_its_own() -> None:
    res = run(scaled(schedule((0, 2), (200, 1)), rate=30.0, duration_s=400.0))
    req = res.requests
    assert set(req["status"].unique()) <= {"finished", "unfinished"}
    stopped = events(res, "stopped")
    assert len(stopped) == 1
    t_stop = stopped["t_s"].iloc[0]
    mine = req[req["replica"] == 1]
    assert (mine["status"] == "finished").all()  # everything it admitted it finished
    assert mine["finish_s"].max() == pytest.approx(t_stop)
    assert (req[req["arrival_s"] > 200.0]["replica"] != 1).all()  # nothing new after the drain
    # unfinished: only what arrived in the run's last seconds (a request takes about 1.5 s)
    assert req[req["status"] == "unfinished"]["arrival_s"].min() > 400.0 - 10.0


def test_energy_is_the_replicas_lifetimes_and_off_servers_draw_nothing() -> None:
    res = run(scaled(schedule((0, 1), (150, 2), (350, 1)), rate=15.0, duration_s=600.0))
    rep = res.replicas.set_index("replica")
    idle_w = 8 * load_catalog().gpu("H200-SXM").idle_power_w
    on = events(res, "server_on")["t_s"].iloc[0]
    off = events(res, "server_off")["t_s"].iloc[0]
    ts = res.timeseries[res.timeseries["replica"] == 1]
    busy_s = float((ts["busy_fraction"] * (ts["t_end_s"] - ts["t_start_s"])).sum())
    # idle draw exactly while its server was powered and it was not iterating
    assert rep.at[1, "idle_energy_j"] == pytest.approx(idle_w * (off - on - busy_s), rel=1e-6)
    served = res.requests.groupby("replica")["energy_j"].sum()
    assert rep.at[1, "energy_j"] == pytest.approx(served[1] + rep.at[1, "idle_energy_j"],
                                                  rel=1e-6)
    srv = res.power[(res.power["domain"] == "server") & (res.power["name"] == "r/dgx-h200-2")]
    dark = srv[(srv["t_end_s"] <= on) | (srv["t_start_s"] >= off)]
    assert len(dark) > 5 and (dark["power_w"] == 0).all()
    lit = srv[(srv["t_start_s"] >= on) & (srv["t_end_s"] <= off)]
    assert (lit["power_w"] > idle_w).all()  # GPUs at idle or above plus the host
    assert rep.at[1, "in_use_s"] == pytest.approx(
        events(res, "stopped")["t_s"].iloc[0] - 150.0)


def test_a_schedule_that_changes_nothing_equals_the_fixed_deployment() -> None:
    fixed = scaled(schedule((0, 2)), rate=25.0, duration_s=300.0)
    del fixed["workloads"][0]["scaling"]
    steps = run(scaled(schedule((0, 2), (100, 2), (200, 2)), rate=25.0, duration_s=300.0))
    plain = run(fixed)
    a, b = steps.requests, plain.requests
    assert len(a) == len(b)
    assert (a["replica"].to_numpy() == b["replica"].to_numpy()).all()
    for col in ("first_token_s", "finish_s", "energy_j"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9,
                                   atol=1e-9)
    assert steps.totals()["facility_kwh"] == pytest.approx(plain.totals()["facility_kwh"],
                                                          rel=1e-9)


def test_a_lower_power_limit_slows_the_requests_that_run_under_it() -> None:
    sc = schedule((0, 1), (300, 1), **{"1": {"power_cap_w": 200}})
    res = run(scaled(sc, rate=12.0, replicas=1, servers=1, tp=1, duration_s=600.0))
    req = res.requests[res.requests["status"] == "finished"]
    before = req[req["finish_s"] < 300]["tpot_s"].median()
    after = req[req["arrival_s"] > 300]["tpot_s"].median()
    assert after > 1.1 * before
    lim = events(res, "limit")
    assert lim["value"].tolist() == [200.0]


@pytest.mark.parametrize("routing", ["round_robin", "power_of_two", "central_queue",
                                     "prefix_affinity"])
def test_every_routing_sends_work_only_to_open_replicas(routing: str) -> None:
    res = run(scaled(schedule((0, 1), (60, 3), (200, 1)), rate=20.0, replicas=3,
                     servers=3, duration_s=280.0, routing=routing))
    req = res.requests
    ready = events(res, "ready").set_index("replica")["t_s"]
    drains = events(res, "drain").set_index("replica")["t_s"]
    for r in (1, 2):
        mine = req[req["replica"] == r]
        assert len(mine) > 0
        started = mine["finish_s"] - mine["e2e_s"] + mine["ttft_s"]  # first token
        assert (started >= ready[r]).all()
        # admitted after the drain began: none (central queue: none pulled after it)
        assert (mine["first_token_s"].dropna() <= drains[r] + 60).all()
    assert set(req["status"].unique()) <= {"finished", "unfinished"}


def test_an_autoscaler_under_constant_load_settles_without_oscillating() -> None:
    auto = {"kind": "autoscaler", "metric": "outstanding_per_replica", "target": 30,
            "initial_replicas": 1, "warmup_s": 10.0}
    res = run(scaled(auto, rate=40.0, replicas=6, servers=6, duration_s=1500.0))
    targets = events(res, "target")
    assert 0 < len(targets) <= 6  # a few steps up, then it holds
    late = targets[targets["t_s"] > 900.0]
    assert len(late) <= 1
    final = int(targets["value"].iloc[-1])
    # Little's law: outstanding = rate x time in system; the target holds it near 30 each
    req = res.requests[(res.requests["arrival_s"] > 900) & (res.requests["status"] == "finished")]
    in_system = 40.0 * req["e2e_s"].mean()
    assert math.ceil(in_system / 30 * 0.9) <= final <= math.ceil(in_system / 30 * 1.1) + 1


def ramp_trace(tmp: Path) -> Path:
    """Poisson arrivals at 4/s for 300 s, 40/s for 300 s, then 4/s for 900 s (prompts of
    800 tokens, answers of 150)."""
    rng = np.random.default_rng(3)
    times, t = [], 0.0
    for rate, until in ((4.0, 300.0), (40.0, 600.0), (4.0, 1500.0)):
        while t < until:
            t += rng.exponential(1 / rate)
            times.append(t)
    t0 = np.datetime64("2023-11-16T18:00:00.000000")
    rows = [f"{t0 + np.timedelta64(int(x * 1e6), 'us')},800,150" for x in times]
    path = tmp / "ramp.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    return path


def test_the_autoscaler_follows_a_ramp_up_and_back_down(tmp_path: Path) -> None:
    auto = {"kind": "autoscaler", "target": 20, "initial_replicas": 1, "warmup_s": 10.0,
            "scale_down_window_s": 120.0}
    data = scaled(auto, replicas=4, servers=4, duration_s=1500.0,
                  arrival={"kind": "trace", "path": str(ramp_trace(tmp_path))})
    res = run(data)
    t = events(res, "target")
    up = t[t["value"] > 1]
    assert len(up) and 300 <= up["t_s"].min() < 400  # the ramp is seen within a minute or so
    assert t["value"].max() >= 2
    assert int(t["value"].iloc[-1]) == 1  # back to one after the peak
    peak = t[(t["t_s"] > 420) & (t["t_s"] < 600)]
    assert (peak["value"] >= 2).all()  # it may trim an overshoot, not drop to one
    assert events(res, "stopped")["t_s"].max() > 600  # the peak's replicas go after it
    assert len(events(res, "server_off"))  # the servers it stopped switched off
    # the summary's GPU-hours in use are the replicas' time in use, below the slots'
    reps = res.replicas
    in_use = float((reps["in_use_s"] * reps["gpus"]).sum()) / 3600
    svc = res.record.services["chat"]
    assert svc.gpu_hours_in_use == pytest.approx(in_use)
    assert res.record.total.gpu_hours_in_use == pytest.approx(in_use)
    assert in_use < 0.6 * svc.gpu_hours  # one replica of four most of the time


def test_scaled_runs_are_deterministic_and_events_stay_per_request() -> None:
    auto = {"kind": "autoscaler", "target": 20, "initial_replicas": 1, "warmup_s": 5.0}
    data = scaled(auto, rate=25.0, replicas=3, servers=3, duration_s=450.0)
    s = scenario_from_data(data)
    a, b = simulate(s), simulate(s)
    pd.testing.assert_frame_equal(a.scaling, b.scaling)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    # events: the fixed deployment's per request, plus a few per scaling action and one
    # per evaluation (30 in 450 s), never per token or per time step
    fixed = scenario_from_data(data | {"workloads": [
        {k: v for k, v in data["workloads"][0].items() if k != "scaling"}]})
    n_scaled, n_fixed = a.events, simulate(fixed).events
    actions = len(a.scaling)
    assert n_scaled < 1.2 * n_fixed + 10 * actions + 2 * 30


@pytest.mark.parametrize("scaling, where", [
    (schedule((0, 1), (300, 2), (200, 1)), "steps[2].at_s"),
    (schedule((10, 1)), "steps[0].at_s"),
    (schedule((0, 1), (900, 2)), "beyond the run"),
    (schedule((0, 3)), "above deployment.replicas"),
    ({"kind": "autoscaler", "target": 5, "min_replicas": 2, "max_replicas": 1},
     "min_replicas (2) is above max_replicas (1)"),
])
def test_bad_scaling_is_a_one_line_error(scaling: dict, where: str) -> None:
    with pytest.raises(DcsimError) as exc:
        scenario_from_data(scaled(scaling))
    assert where in str(exc.value) and "\n" not in str(exc.value).strip()


def test_a_scheduled_power_limit_outside_the_gpu_range_is_refused(tmp_path) -> None:
    import yaml

    from dcsim.scenario import load_scenario

    sc = schedule((0, 1), (100, 1), **{"1": {"power_cap_w": 90}})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scaled(sc)))
    with pytest.raises(DcsimError) as exc:
        load_scenario(path)
    assert "workloads[0].scaling.steps[1].power_cap_w" in str(exc.value)
    assert "200-700 W" in str(exc.value)
