"""Cluster scheduler replay: FIFO blocking, EASY backfill, GPU sharing, metrics."""

from __future__ import annotations

import pandas as pd
import pytest
import simpy

from dcsim.engine.cluster import ClusterReplay
from dcsim.errors import DcsimError
from dcsim.workloads.cluster_trace import load_cluster_trace, resolve


def _nodes(*gpus: int) -> pd.DataFrame:
    return pd.DataFrame({"sn": [f"n{i}" for i in range(len(gpus))], "gpu": list(gpus),
                         "cpu_milli": 64000, "memory_mib": 262144})


def _pods(rows: list[tuple[float, int, int, float]]) -> pd.DataFrame:
    """(submit, GPUs, milli-GPU, run time) per pod."""
    return pd.DataFrame({"creation_time": [r[0] for r in rows], "num_gpu": [r[1] for r in rows],
                         "gpu_milli": [r[2] for r in rows], "run_s": [r[3] for r in rows],
                         "cpu_milli": 1000, "memory_mib": 1024, "qos": "LS"})


def _replay(nodes, pods, policy: str, duration: float = 1000.0):
    env = simpy.Environment()
    c = ClusterReplay(env, nodes, pods, policy, duration, 10.0)
    env.run(until=duration)
    return c.tables()


# A: all of node 0 for 100 s; B: needs all of node 0 again; C: fits node 1 at once.
JOBS = [(0.0, 4, 1000, 100.0), (1.0, 4, 1000, 100.0), (2.0, 2, 1000, 50.0)]


def test_fifo_head_of_line_blocking():
    pods, _ = _replay(_nodes(4, 2), _pods(JOBS), "fifo")
    assert pods["start_s"].tolist() == [0.0, 100.0, 100.0]  # C waits behind B


def test_easy_backfill_starts_what_does_not_delay_the_head():
    pods, _ = _replay(_nodes(4, 2), _pods(JOBS), "easy_backfill")
    assert pods["start_s"].tolist() == [0.0, 100.0, 2.0]  # C on the other node, B unharmed


def test_backfill_never_delays_the_reserved_head():
    # node 0 has 5 GPUs: A takes 4, B needs all 5 (reserved there at t = 100). D fits the
    # spare GPU of node 0 now but would run past t = 100, so it waits for node 1 (free at 52)
    jobs = [(0.0, 4, 1000, 100.0), (1.0, 5, 1000, 100.0), (2.0, 2, 1000, 50.0),
            (3.0, 1, 1000, 500.0)]
    easy, _ = _replay(_nodes(5, 2), _pods(jobs), "easy_backfill")
    assert easy["start_s"].tolist() == [0.0, 100.0, 2.0, 52.0]
    fifo, _ = _replay(_nodes(5, 2), _pods(jobs), "fifo")
    assert fifo["start_s"].tolist() == [0.0, 100.0, 100.0, 150.0]  # behind B, then C


def test_gpu_sharing_and_fragmentation():
    pods, series = _replay(_nodes(1), _pods([(0.0, 1, 500, 100.0), (0.0, 1, 300, 100.0),
                                             (0.0, 1, 400, 100.0)]), "fifo", duration=300.0)
    assert pods["start_s"].tolist() == [0.0, 0.0, 100.0]
    first = series.iloc[0]
    assert first["gpu_allocation"] == pytest.approx(0.8)
    # all of the free capacity (0.2 GPU) is stranded on the shared GPU
    assert first["fragmentation"] == pytest.approx(1.0)
    assert first["queue_length"] == pytest.approx(1.0)


def test_allocation_is_integrated_exactly():
    _, series = _replay(_nodes(2), _pods([(0.0, 1, 1000, 15.0)]), "fifo", duration=30.0)
    # one of two GPUs busy for 15 s: half of bucket 0 (0-10 s), half of 10-20 s for 5 s
    assert series["gpu_allocation"].tolist()[:3] == pytest.approx([0.5, 0.25, 0.0])


def test_alibaba_trace_loads_and_checks():
    nodes, pods = load_cluster_trace(*resolve("builtin:alibaba-gpu-2023", None))
    assert len(nodes) == 1213 and nodes["gpu"].sum() == 6212
    assert len(pods) == 8152 and (pods["run_s"] >= 0).all()
    with pytest.raises(DcsimError, match="builtin:alibaba-gpu-2023"):
        resolve("builtin:nope", None)


def test_cluster_replay_runs_from_the_cli(tmp_path):
    import json
    from pathlib import Path

    import yaml
    from typer.testing import CliRunner

    from dcsim.cli import app

    root = Path(__file__).resolve().parents[1]
    d = yaml.safe_load((root / "scenarios" / "cluster_replay.yaml").read_text())
    d["simulation"]["duration_s"] = 100000
    scen = tmp_path / "c.yaml"
    scen.write_text(yaml.safe_dump(d))
    res = CliRunner().invoke(app, ["run", str(scen), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    pods = pd.read_parquet(tmp_path / "o" / "cluster_pods.parquet")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    c = summary["cluster_replays"][0]
    assert c["pods"] == len(pods) == 8152
    assert c["pods_started"] == int(pods["started"].sum()) > 0
    assert 0 < c["gpu_allocation_peak"] <= 1
    # the terminal: a cluster-replay table with the pods' counts, no inference table
    assert "cluster replays" in res.output and "TTFT" not in res.output
    assert f"{c['pods_started']:,} of {c['pods']:,}" in res.output.replace("\n", " ") or \
        f"{c['pods_started']:,} of" in res.output
