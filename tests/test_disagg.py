"""Disaggregated prefill and decode: a lone request by hand over NVLink, NICs and
uplinks, max-min sharing of a port, conservation of KV bytes, energy and requests,
determinism, and the inputs refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_helpers import time_in_system_s

from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.scenario import load_scenario, scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
MODEL, GPU = "llama-3.1-8b", "H200-SXM"
A, B = "r/dgx-h200-1", "r/dgx-h200-2"


def kv_bytes_per_token(catalog) -> float:
    """K and V of every layer, kv_heads x head_dim elements each, 2 bytes (BF16)."""
    m = catalog.model(MODEL)
    return 2 * m.layers * m.kv_heads * m.head_dim * 2


def nic_byte_s_per_gpu(catalog) -> float:
    x = catalog.server("dgx-h200")
    return x.nics * x.nic_gbps / 8 * 1e9 / x.gpus_per_server


def scenario(tmp_path: Path, rows: list[tuple[float, int, int]], prefill: dict, decode: dict,
             network: dict | None = None, duration_s: float = 60.0, servers: int = 2):
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:00:{t:09.6f},{p},{o}\n" for t, p, o in rows))
    fleet: dict = {"racks": [{"name": "r", "power_budget_kw": 100, "servers": [{"type": "dgx-h200",
                                                        "count": servers}]}]}
    if network:
        fleet["network"] = network
    return scenario_from_data({
        "name": "pd", "fleet": fleet,
        "workloads": [{"kind": "inference", "name": "rag", "model": MODEL,
                       "arrival": {"kind": "trace", "path": str(trace)},
                       "deployment": {"prefill": {"gpu": GPU, **prefill},
                                      "decode": {"gpu": GPU, **decode}}}],
        "simulation": {"duration_s": duration_s, "seed": 1, "time_bucket_s": 10}})


def pool(replicas: int = 1, *servers: str, **more: object) -> dict:
    return {"replicas": replicas, **({"servers": list(servers)} if servers else {}), **more}


@pytest.mark.parametrize("where", ["nvlink", "nic", "uplinks"])
def test_a_lone_request_takes_prefill_then_its_transfer_then_decode(tmp_path, store, catalog,
                                                                    where):
    prompt, output = 2048, 64
    decode_on = A if where == "nvlink" else B
    # one server a leaf, 16:1 oversubscribed: each uplink carries 8 x 400 Gb/s / 16
    net = {"servers_per_leaf": 1, "oversubscription": 16} if where == "uplinks" else None
    r = simulate(scenario(tmp_path, [(0.0, prompt, output)], pool(1, A),
                          pool(1, decode_on), net)).requests.iloc[0]
    pre = store.query(GPU, MODEL, "prefill", 1, prompt)
    dec = [store.query(GPU, MODEL, "decode", 1, prompt + j).latency_ms
           for j in range(output - 1)]
    nbytes = prompt * kv_bytes_per_token(catalog)
    rate = {"nvlink": catalog.gpu(GPU).scaleup_bandwidth_gbyte_s * 1e9 / 2,  # one direction
            "nic": nic_byte_s_per_gpu(catalog),
            "uplinks": 8 * nic_byte_s_per_gpu(catalog) / 16}[where]
    assert r["status"] == "finished"
    assert (r["prefill_replica"], r["decode_replica"]) == (0, 1)
    assert r["ttft_s"] == pytest.approx(pre.latency_ms / 1e3, rel=1e-9)
    assert r["kv_bytes"] == pytest.approx(nbytes, rel=1e-12)
    assert r["kv_wait_s"] == 0.0
    assert r["kv_transfer_s"] == pytest.approx(nbytes / rate, rel=1e-9)
    assert r["e2e_s"] - r["ttft_s"] == pytest.approx(nbytes / rate + sum(dec) / 1e3, rel=1e-4)


def test_two_transfers_from_one_port_share_it_max_min(tmp_path, catalog):
    # both prompts prefill in one iteration on one replica, then go to two idle decode
    # replicas at once: the prefill replica's NIC port is shared, half each, until the
    # shorter ends; the longer then has the whole port
    short, long_ = 1000, 3000
    res = simulate(scenario(tmp_path, [(0.0, short, 20), (0.0, long_, 20)], pool(1, A),
                            pool(2, B, B))).requests.sort_values("prompt_tokens")
    port, per = nic_byte_s_per_gpu(catalog), kv_bytes_per_token(catalog)
    t1 = short * per / (port / 2)
    t2 = t1 + (long_ - short) * per / port
    assert res["decode_replica"].tolist() == [1, 2]
    assert res["kv_transfer_s"].tolist() == pytest.approx([t1, t2], rel=1e-9)


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """Load on two prefill replicas and three decode replicas over two servers; arrivals
    stop at 60 s so that every request is done by the end."""
    d = {"name": "pd-busy",
         "fleet": {"racks": [{"name": "r", "power_budget_kw": 100,
                              "servers": [{"type": "dgx-h200", "count": 2}]}]},
         "workloads": [{
             "kind": "inference", "name": "rag", "model": MODEL,
             "arrival": {"kind": "steps", "step_s": 60, "rates_per_s": [10.0, 0.0]},
             "prompt_tokens": {"kind": "lognormal", "mean_tokens": 3000, "sigma": 0.6,
                               "max_tokens": 12000},
             "output_tokens": {"kind": "lognormal", "mean_tokens": 200, "sigma": 0.7,
                               "max_tokens": 1500},
             "deployment": {"prefill": pool(2, A, B, gpu=GPU),
                            "decode": pool(3, A, B, B, gpu=GPU, max_num_seqs=32)}}],
         "simulation": {"duration_s": 120, "warmup_s": 0, "seed": 7, "time_bucket_s": 10}}
    s = scenario_from_data(d)
    return s, simulate(s)


def test_every_request_is_moved_once_and_its_bytes_cross_both_ports(busy):
    _, r = busy
    q = r.requests
    assert (q["status"] == "finished").all() and len(q) > 400
    moved = q[q["output_tokens"] > 1]
    assert moved["kv_transfer_s"].notna().all() and (moved["kv_bytes"] > 0).all()
    links = r.links[r.links["link"].str.contains("/replica-")]
    sent = links["link"].str.endswith("-out")
    carried = links["load_byte_s"] * (links["t_end_s"] - links["t_start_s"])
    # bytes leave the prefill ports and land at the decode ports: all of them, once
    assert carried[sent].sum() == pytest.approx(moved["kv_bytes"].sum(), rel=1e-9)
    assert carried[~sent].sum() == pytest.approx(moved["kv_bytes"].sum(), rel=1e-9)
    # replicas 0 (server A) and 2 (server A) move over NVLink, the rest over NICs
    same = moved["prefill_replica"].map({0: A, 1: B}) == moved["decode_replica"].map(
        {2: A, 3: B, 4: B})
    nvl = links["link"].str.contains("nvlink")
    assert carried[sent & nvl].sum() == pytest.approx(moved.loc[same, "kv_bytes"].sum(),
                                                      rel=1e-9)
    assert 0 < same.sum() < len(moved)


def test_energy_and_requests_are_conserved_across_both_pools(busy):
    s, r = busy
    device = r.replicas["energy_j"].sum()
    parts = r.requests["energy_j"].sum() + r.replicas["idle_energy_j"].sum()
    assert parts == pytest.approx(device, rel=1e-12)
    assert set(r.replicas["pool"]) == {"prefill", "decode"}
    # Little's law over both pools: a request is outstanding at its prefill replica,
    # then at its decode replica, with no gap between
    in_system = time_in_system_s(r.requests, s.simulation.duration_s)
    assert r.replicas["in_system_x_s"].sum() == pytest.approx(in_system, rel=1e-9)
    # a decode replica takes a request at its next step: a short wait, one step at most
    assert 0 < r.requests["kv_wait_s"].max() < 0.05


def test_a_request_waiting_for_decode_room_holds_its_kv_on_the_prefill_replica(tmp_path):
    # three prompts prefill together; the decode replica takes one at a time
    rows = [(0.0, 1000, 200), (0.0, 1500, 200), (0.0, 2000, 200)]
    r = simulate(scenario(tmp_path, rows, pool(1, A), pool(1, B, max_num_seqs=1)))
    q = r.requests.sort_values("prompt_tokens")
    # each transfer starts as the request before it finishes (its slot frees)
    start = q["first_token_s"] + q["kv_wait_s"]
    assert start.iloc[1:].to_numpy() == pytest.approx(q["finish_s"].iloc[:-1].to_numpy(),
                                                      rel=1e-9)
    assert q["kv_wait_s"].iloc[2] > q["kv_wait_s"].iloc[1] > 1.0
    # the prefill replica holds each prompt's KV from admission (0 s) until it is sent
    held = r.timeseries.loc[r.timeseries["replica"] == 0, "kv_tokens"].sum() * 10.0
    landed = start + q["kv_transfer_s"]
    assert held == pytest.approx(float((q["prompt_tokens"] * landed).sum()), rel=1e-9)


def test_the_same_seed_gives_the_same_run(busy):
    s, r = busy
    again = simulate(s)
    pd.testing.assert_frame_equal(r.requests, again.requests)
    pd.testing.assert_frame_equal(r.links, again.links)


def test_a_colocated_service_beside_a_disaggregated_one_runs_as_alone(tmp_path):
    d = {"name": "both",
         "workloads": [{"kind": "inference", "name": "chat", "model": MODEL,
                        "arrival": {"kind": "poisson", "rate_per_s": 4},
                        "prompt_tokens": {"kind": "constant", "tokens": 500},
                        "output_tokens": {"kind": "constant", "tokens": 100},
                        "deployment": {"gpu": GPU, "replicas": 2}}],
         "simulation": {"duration_s": 60, "seed": 2, "time_bucket_s": 10}}
    alone = simulate(scenario_from_data(d)).requests
    d["workloads"].append({**d["workloads"][0], "name": "rag", "deployment": {
        "prefill": {"gpu": GPU, "replicas": 1}, "decode": {"gpu": GPU, "replicas": 1}}})
    both = simulate(scenario_from_data(d)).requests
    chat = both[both["service"] == "chat"].reset_index(drop=True)
    for col in ("arrival_s", "first_token_s", "finish_s", "energy_j", "replica"):
        np.testing.assert_array_equal(chat[col].to_numpy(), alone[col].to_numpy(), col)
    assert (chat["prefill_replica"] == chat["decode_replica"]).all()


def _refused(data: dict, tmp_path: Path) -> str:
    import yaml

    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(DcsimError) as err:
        load_scenario(f)
    return str(err.value)


def _base(deployment: dict, **more: object) -> dict:
    return {"name": "bad", "workloads": [{
        "kind": "inference", "name": "rag", "model": MODEL,
        "arrival": {"kind": "poisson", "rate_per_s": 1},
        "prompt_tokens": {"kind": "constant", "tokens": 1000},
        "output_tokens": {"kind": "constant", "tokens": 10},
        "deployment": deployment, **more}]}


def test_bad_pools_are_refused_with_the_field_and_what_is_expected(tmp_path):
    one = {"gpu": GPU, "replicas": 1}
    msg = _refused(_base({"prefill": one, "decode": {"gpu": GPU, "replicas": 0}}), tmp_path)
    assert "workloads[0].deployment.decode.replicas" in msg and "greater than or equal to 1" in msg
    msg = _refused(_base({"prefill": one, "gpu": GPU, "replicas": 1}), tmp_path)
    assert "both one deployment (gpu, replicas) and pools (prefill)" in msg
    msg = _refused(_base({"prefill": one}), tmp_path)
    assert "workloads[0].deployment.decode" in msg and "required" in msg
    # a decode replica whose KV cache cannot hold one 20,000-token prompt: 12 % of
    # 141 GB less 16 GB of weights leaves about 0.9 GB, some 7,000 tokens
    tiny = {"gpu": GPU, "replicas": 1, "gpu_memory_utilization": 0.12}
    d = _base({"prefill": one, "decode": tiny})
    d["workloads"][0]["prompt_tokens"]["tokens"] = 20_000
    msg = _refused(d, tmp_path)
    assert "workloads[0].deployment.decode" in msg and "20001 tokens" in msg
    msg = _refused(_base({"prefill": one, "decode": one},
                         scaling={"kind": "schedule", "steps": [{"at_s": 0, "replicas": 1}]}),
                   tmp_path)
    assert "not modelled" in msg


def test_pools_on_servers_without_nics_are_refused():
    d = _base({"prefill": {"gpu": GPU, "replicas": 1, "tp": 8},
               "decode": {"gpu": GPU, "replicas": 1, "tp": 8}})
    r = simulate(scenario_from_data(d))  # two DGX H200s (auto-sized): over their NICs
    done = r.requests[r.requests["status"] == "finished"]
    assert len(done) and (done["kv_transfer_s"] > 0).all()
    d["catalog"] = {"servers": [{
        "id": "h200-no-nic", "gpu": GPU, "gpus_per_server": 8, "max_power_w": 10200,
        "non_gpu_power_w": 4600, "nics": 0, "nic_gbps": 400, "source": "test: no NICs"}]}
    d["fleet"] = {"racks": [{"name": "r", "power_budget_kw": 100,
                             "servers": [{"type": "h200-no-nic", "count": 2}]}]}
    with pytest.raises(DcsimError, match="scale-out NICs"):
        simulate(scenario_from_data(d))


def test_the_shipped_scenario_runs_with_its_pools_in_the_summary_terminal_and_report(
        tmp_path):
    import json

    from typer.testing import CliRunner

    from dcsim.cli import app

    out = tmp_path / "pd"
    r = CliRunner().invoke(app, ["run", str(ROOT / "scenarios" / "disaggregated.yaml"),
                                 "--out", str(out), "-q", "--report",
                                 "--set", "simulation.duration_s=120",
                                 "--set", "simulation.warmup_s=10"])
    assert r.exit_code == 0, r.output
    assert "pools rag: prefill 12 replicas (12 GPUs)" in " ".join(r.output.split())
    svc = json.loads((out / "summary.json").read_text())["services"]["rag"]
    pools = svc["pools"]
    reps = pd.read_parquet(out / "replicas.parquet")
    q = pd.read_parquet(out / "requests.parquet")
    # the pools' energy is the service's; the KV moved is its requests' after warm-up
    assert pools["prefill"]["energy_kwh"] + pools["decode"]["energy_kwh"] == pytest.approx(
        svc["energy_kwh"], rel=1e-12)
    assert pools["decode"]["replicas"] == (reps["pool"] == "decode").sum() == 4
    done = q[(q["status"] == "finished") & ~q["in_warmup"]]
    assert pools["kv_transfer"]["kv_gb"] == pytest.approx(done["kv_bytes"].sum() / 1e9)
    assert 0 < pools["prefill"]["busy_fraction"] < 1
    links = pd.read_parquet(out / "links.parquet")
    nic = links[links["link"].str.endswith("nic-in")]
    assert nic["load_byte_s"].sum() > 0  # the first server's prefill sends over NICs
    page = (out / "report.html").read_text()
    assert "<h2>Disaggregated serving</h2>" in page
    assert "KV cache moves between the prefill and decode pools" in page


@pytest.mark.parametrize("command", ["optimize", "size"])
def test_planning_commands_refuse_pools_in_one_line(tmp_path, command):
    from typer.testing import CliRunner

    from dcsim.cli import app

    r = CliRunner().invoke(app, [command, str(ROOT / "scenarios" / "disaggregated.yaml"),
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"dcsim {command} does not take disaggregated prefill and decode pools" in " ".join(
        r.output.split())
    assert not (tmp_path / "out").exists()
