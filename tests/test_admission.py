"""Admission control by hand: priority classes decide admission and preemption order,
max_queue_s drops a request still waiting at its deadline, a full queue rejects; each
counts in SLO attainment as a miss."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import load_yaml

from dcsim.catalog import load_catalog, shapes
from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.scenario import scenario_from_data
from dcsim.slo import slo_attainment

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [{"name": "interactive", "share": 0.5, "priority": 1},
           {"name": "batch", "share": 0.5, "priority": 0}]


def _scenario(tmp: Path, rows: list[tuple[float, int, int, str]], classes=CLASSES,
              **deployment: object) -> dict:
    trace = tmp / "classes.csv"
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens,priority_class"]
    lines += [f"2023-11-16 18:00:{t:09.6f},{p},{o},{c}" for t, p, o, c in rows]
    trace.write_text("\n".join(lines) + "\n")
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    w = d["workloads"][0]
    w["arrival"] = {"kind": "trace", "path": str(trace)}
    w["classes"] = classes
    w["deployment"].update(replicas=1, **deployment)
    d["simulation"] = {"duration_s": 120, "seed": 1}
    return d


def _run(d: dict):
    return simulate(scenario_from_data(d))


def test_the_higher_priority_is_admitted_first(tmp_path):
    # one batch slot: request 0 runs; 1 (batch) and 2 (interactive) wait; 2 goes first
    rows = [(0.0, 100, 300, "batch"), (0.1, 100, 20, "batch"), (0.2, 100, 20, "interactive")]
    q = _run(_scenario(tmp_path, rows, max_num_seqs=1)).requests
    assert q["priority_class"].tolist() == ["batch", "batch", "interactive"]
    assert q["first_token_s"][2] < q["first_token_s"][1]
    # without priorities it is first come, first served
    same = [dict(c, priority=0) for c in CLASSES]
    q = _run(_scenario(tmp_path, rows, classes=same, max_num_seqs=1)).requests
    assert q["first_token_s"][1] < q["first_token_s"][2]


def _blocks_utilization(blocks: int) -> float:
    cat = load_catalog()
    m, g = cat.model("llama-3.1-8b"), cat.gpu("H200-SXM")
    need = shapes.weight_bytes(m) + (blocks * 16 + 0.5) * shapes.kv_bytes_per_token(m)
    return need / (g.memory_gb * 1e9)


def test_preemption_takes_the_lowest_priority_first(tmp_path):
    # 40 blocks of 16 tokens; two sequences of 10 blocks grow by 25 each: one must go.
    # vLLM preempts the newest (the interactive one); with priorities the batch one goes
    rows = [(0.0, 160, 400, "batch"), (0.01, 160, 400, "interactive")]
    for classes, victim in ((CLASSES, 0), ([dict(c, priority=0) for c in CLASSES], 1)):
        d = _scenario(tmp_path, rows, classes=classes, kv_block_tokens=16,
                      gpu_memory_utilization=_blocks_utilization(40))
        q = _run(d).requests
        assert (q["status"] == "finished").all()
        assert (q["preemptions"] > 0).tolist() == [victim == 0, victim == 1]


def test_a_request_waiting_past_max_queue_s_is_dropped_at_its_deadline(tmp_path):
    # request 0 holds the only slot for seconds; 1 may wait 0.5 s, 2 may wait forever
    classes = [{"name": "interactive", "share": 0.5, "priority": 0, "max_queue_s": 0.5},
               {"name": "batch", "share": 0.5, "priority": 0}]
    rows = [(0.0, 100, 600, "batch"), (0.1, 100, 20, "interactive"), (0.2, 100, 20, "batch")]
    d = _scenario(tmp_path, rows, classes=classes, max_num_seqs=1)
    d["workloads"][0]["slo"] = {"e2e_p99_s": 100}
    r = _run(d)
    q = r.requests
    assert q["status"].tolist() == ["finished", "timed_out", "finished"]
    assert q["replica"][1] == -1 and q["energy_j"][1] == 0
    # Little's law: the replica counted request 1 from its arrival to its deadline only
    in_system = (q["finish_s"] - q["arrival_s"]).sum(skipna=True) + 0.5
    assert r.replicas["in_system_x_s"].sum() == pytest.approx(in_system, rel=1e-12)
    # one definition of attainment: the timed-out request is a miss
    assert slo_attainment(q, scenario_from_data(d).workloads[0].slo, 120) == pytest.approx(2 / 3)


def test_a_full_queue_rejects_the_arrival(tmp_path):
    rows = [(0.0, 100, 300, "batch"), (0.1, 100, 20, "batch"), (0.2, 100, 20, "batch"),
            (30.0, 100, 20, "batch")]
    q = _run(_scenario(tmp_path, rows, max_num_seqs=1, max_waiting_requests=1)).requests
    assert q["status"].tolist() == ["finished", "finished", "rejected", "finished"]


def test_central_queue_orders_by_priority_too(tmp_path):
    rows = [(0.0, 100, 300, "batch"), (0.1, 100, 20, "batch"), (0.2, 100, 20, "interactive")]
    d = _scenario(tmp_path, rows, max_num_seqs=1)
    d["workloads"][0]["routing"] = "central_queue"
    q = _run(d).requests
    assert q["first_token_s"][2] < q["first_token_s"][1]


@pytest.mark.parametrize(("change", "message"), [
    ({"classes": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}]}, "add up to 1"),
    ({"classes": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]}, "each name once"),
    ({"classes": [{"name": "a", "share": 1, "max_queue_s": 0}]}, "greater than 0"),
    ({"max_queue_s": -2}, "greater than 0"),
])
def test_bad_classes_are_refused_in_one_line(tmp_path, change, message):
    d = _scenario(tmp_path, [(0.0, 100, 20, "a")])
    d["workloads"][0].update(change)
    with pytest.raises(DcsimError, match=message):
        scenario_from_data(d)


def test_an_unknown_class_in_the_trace_is_refused(tmp_path):
    d = _scenario(tmp_path, [(0.0, 100, 20, "batch"), (1.0, 100, 20, "gold")])
    with pytest.raises(DcsimError) as exc:
        simulate(scenario_from_data(d))
    p = exc.value.problems[0]
    assert (p.path, p.value) == ("priority_class", "gold")
    assert "interactive, batch" in p.expected


def test_a_queue_limit_of_zero_is_refused(tmp_path):
    d = _scenario(tmp_path, [(0.0, 100, 20, "batch")], max_waiting_requests=0)
    with pytest.raises(DcsimError, match="max_waiting_requests"):
        scenario_from_data(d)


def test_the_run_table_counts_requests_turned_away(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from dcsim.cli import app

    classes = [{"name": "interactive", "share": 0.5, "priority": 0, "max_queue_s": 0.5},
               {"name": "batch", "share": 0.5, "priority": 0}]
    rows = [(0.0, 100, 600, "batch"), (0.1, 100, 20, "interactive"), (0.2, 100, 20, "batch"),
            (0.3, 100, 20, "batch")]
    d = _scenario(tmp_path, rows, classes=classes, max_num_seqs=1, max_waiting_requests=2)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 0, res.output
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip()
             for line in res.output.splitlines() if line.count("│") >= 3}
    # request 1 times out in the queue; request 3 finds the queue (1 and 2) full
    assert lines["requests timed out"] == "1" and lines["requests rejected"] == "1"
    assert "requests aborted" not in lines
