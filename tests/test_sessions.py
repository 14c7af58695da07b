"""Multi-turn sessions: each turn re-sends the history and arrives a think time after
the previous answer; with prefix caching the history's whole blocks are reused; a
prompt after cached (or already prefilled) tokens pays their attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine_helpers import chat_service, load_yaml, time_in_system_s

from dcsim.engine.simulation import Context, build, simulate
from dcsim.errors import DcsimError
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
BLOCK, NEW, THINK_S, PREFIX = 16, 100, 5.0, 500  # the prefix ends inside its 32nd block


def _sessions(duration_s: float = 300, replicas: int = 1, caching: bool = True,
              routing: str = "prefix_affinity", **deployment: object) -> dict:
    w = chat_service(0.2, replicas, output=(120, 0.6, 600))
    w["prompt_tokens"] = {"kind": "constant", "tokens": NEW}
    w["shared_prefix"] = {"tokens": PREFIX}
    w["sessions"] = {"mean_turns": 4, "mean_think_time_s": THINK_S, "think_time": "constant"}
    w["routing"] = routing
    w["affinity_slack_requests"] = 1000
    w["deployment"].update(prefix_caching=caching, kv_block_tokens=BLOCK, **deployment)
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"] = [w]
    d["simulation"] = {"duration_s": duration_s, "seed": 5, "time_bucket_s": 30}
    return d


def _pairs(q):
    """Consecutive turns of each session: (earlier, later) rows side by side."""
    q = q.sort_values(["session", "turn"]).reset_index(drop=True)
    nxt = q.shift(-1)
    same = (nxt["session"] == q["session"]) & (nxt["turn"] == q["turn"] + 1)
    return q[same], nxt[same]


def test_a_turn_resends_its_history_and_comes_a_think_time_after_the_answer():
    s = scenario_from_data(_sessions())
    q = simulate(s).requests
    planned = build(s, Context.load(s, ROOT)).requests
    first = q[q["turn"] == 0]
    assert (first["prompt_tokens"] == PREFIX + NEW).all()
    a, b = _pairs(q)
    assert len(a) > 50
    assert (b["prompt_tokens"].to_numpy() == a["prompt_tokens"].to_numpy()
            + a["output_tokens"].to_numpy() + NEW).all()
    np.testing.assert_allclose(b["arrival_s"].to_numpy(), a["finish_s"].to_numpy() + THINK_S,
                               rtol=1e-12)
    # a turn is sent only when the previous one finished THINK_S before the end
    last = q.sort_values("turn").groupby("session").tail(1)
    turns = planned.groupby("session")["turn"].max()
    cut = last[last["turn"].to_numpy() < turns.loc[last["session"]].to_numpy()]
    assert len(cut) > 0
    assert (cut["finish_s"].isna() | (cut["finish_s"] + THINK_S >= 300)).all()
    assert len(q) < len(planned)


def test_each_turn_finds_the_whole_blocks_of_the_previous_context_cached():
    q = simulate(scenario_from_data(_sessions(replicas=2))).requests
    # prefix affinity with a wide slack: a session never leaves its replica
    assert (q.groupby("session")["replica"].nunique() == 1).all()
    a, b = _pairs(q)
    context = a["prompt_tokens"].to_numpy() + a["output_tokens"].to_numpy() - 1  # computed
    assert (b["cached_tokens"].to_numpy() == context // BLOCK * BLOCK).all()
    # a first turn finds the whole blocks of the shared prefix, once any request made them
    first = q[q["turn"] == 0].sort_values("arrival_s")
    assert set(first["cached_tokens"].iloc[2:]) == {PREFIX // BLOCK * BLOCK}
    # without caching every turn prefills its whole history
    plain = simulate(scenario_from_data(_sessions(replicas=2, caching=False))).requests
    assert (plain["cached_tokens"] == 0).all()
    assert plain["ttft_s"].mean() > 1.5 * q["ttft_s"].mean()


@pytest.fixture(scope="module")
def crowded():
    # many long sessions in little memory: histories are evicted and turns preempted
    d = _sessions(duration_s=240, replicas=2, routing="least_outstanding",
                  gpu_memory_utilization=0.14, max_num_seqs=64)
    d["workloads"][0]["arrival"] = {"kind": "poisson", "rate_per_s": 3.0}
    d["workloads"][0]["sessions"].update(mean_turns=6, think_time="exponential")
    s = scenario_from_data(d)
    return s, simulate(s)


def test_with_sessions_energy_and_littles_law_hold_and_fast_path_equals_step_by_step(crowded):
    s, r = crowded
    q = r.requests
    assert q["preemptions"].sum() > 0 and (q["cached_tokens"] > 0).mean() > 0.5
    parts = q["energy_j"].sum() + r.replicas["idle_energy_j"].sum()
    assert parts == pytest.approx(r.replicas["energy_j"].sum(), rel=1e-12)
    # Little's law: replicas count a request from its routing (queued or admitted) on
    queued = q.assign(replica=0) if (q["status"] != "rejected").all() else q
    assert r.replicas["in_system_x_s"].sum() == pytest.approx(time_in_system_s(queued, 240),
                                                               rel=1e-9)
    slow = simulate(s, coalesce=False).requests
    for col in ("session", "turn", "replica", "preemptions", "status", "cached_tokens"):
        assert (q[col] == slow[col]).all(), col
    for col in ("arrival_s", "first_token_s", "finish_s", "energy_j"):
        np.testing.assert_allclose(q[col], slow[col], rtol=1e-9, atol=1e-9, err_msg=col)


def test_sessions_are_deterministic(crowded):
    s, r = crowded
    again = simulate(s).requests
    assert r.requests.equals(again)


def test_a_chunk_after_earlier_tokens_pays_their_attention(tmp_path, store):
    # one 32768-token prompt in chunks of 16384: the second chunk attends to the first.
    # With P(L) = fixed + linear L + attention L^2 / 2 the two chunks cost
    # P(h) + [P(h) + P(2h) - P(h) - P(h) + P(1)] = P(2h) + P(1)
    trace = tmp_path / "one.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,32768,1\n")
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"][0]["arrival"] = {"kind": "trace", "path": str(trace)}
    d["workloads"][0]["deployment"].update(replicas=1, max_batched_tokens=16384)
    d["simulation"] = {"duration_s": 10, "seed": 1}
    ttft = float(simulate(scenario_from_data(d)).requests["ttft_s"].iloc[0])

    def p(n: int) -> float:
        return store.query("H200-SXM", "llama-3.1-8b", "prefill", 1, n).latency_ms / 1e3

    assert ttft == pytest.approx(p(32768) + p(1), rel=1e-9)
    assert ttft > 1.1 * 2 * p(16384)  # what chunks costed as prompts of their own give


def _trace(tmp: Path, rows: list[tuple[int, int, int, str, str]]) -> Path:
    path = tmp / "labelled.csv"
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens,session_id,prefix_group"]
    lines += [f"2023-11-16 18:{t // 60:02d}:{t % 60:02d},{p},{o},{sid},{g}"
              for t, p, o, sid, g in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _traced(tmp: Path, rows: list[tuple[int, int, int, str, str]], **svc: object) -> dict:
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    w = d["workloads"][0]
    w["arrival"] = {"kind": "trace", "path": str(_trace(tmp, rows))}
    w["deployment"].update(replicas=1, prefix_caching=True)
    w.update(svc)
    d["simulation"] = {"duration_s": 300, "seed": 1}
    return d


def test_a_user_trace_names_its_sessions_and_prefix_groups(tmp_path):
    # two conversations of three turns (each prompt: the last prompt, its answer and 50
    # new tokens) and two system prompts of 256 tokens, requests far apart
    rows = [(0, 300, 80, "a", "x"), (10, 430, 60, "a", "x"), (20, 540, 40, "a", "x"),
            (30, 400, 20, "b", "y"), (40, 470, 30, "b", "y"), (50, 300, 10, "", "x")]
    d = _traced(tmp_path, rows, shared_prefix={"tokens": 256})
    q = simulate(scenario_from_data(d)).requests.sort_values("arrival_s")
    assert q["prompt_tokens"].tolist() == [r[1] for r in rows]  # the prefix is in them
    assert q["session"].nunique() == 3 and q["turn"].tolist() == [0, 1, 2, 0, 1, 0]
    # turn after turn: the previous context's whole blocks; a first turn: its prefix's
    assert q["cached_tokens"].tolist() == [0, (300 + 80 - 1) // 16 * 16,
                                           (430 + 60 - 1) // 16 * 16, 0,
                                           (400 + 20 - 1) // 16 * 16, 256]


@pytest.mark.parametrize(("change", "where"), [
    ({"sessions": {"mean_turns": 0, "mean_think_time_s": 5}}, "sessions.mean_turns"),
    ({"sessions": {"mean_turns": 2.5, "turns": "constant", "mean_think_time_s": 5}},
     "sessions"),
    ({"sessions": {"mean_turns": 3, "mean_think_time_s": -1}}, "sessions.mean_think_time_s"),
    ({"sessions": {"mean_turns": 300, "mean_think_time_s": 5}}, "sessions"),
])
def test_bad_sessions_are_refused_with_the_field_named(change, where):
    d = _sessions()
    d["workloads"][0].update(change)
    with pytest.raises(DcsimError) as exc:
        scenario_from_data(d)
    assert any(p.path == f"workloads[0].{where}" for p in exc.value.problems), exc.value


def test_a_trace_without_lengths_for_turns_or_with_its_own_sessions_is_refused(tmp_path):
    rows = [(0, 300, 80, "a", ""), (10, 430, 60, "a", "")]
    d = _traced(tmp_path, rows, sessions={"mean_turns": 3, "mean_think_time_s": 5})
    with pytest.raises(DcsimError, match="sessions need prompt_tokens"):
        scenario_from_data(d)
    d["workloads"][0].update(prompt_tokens={"kind": "constant", "tokens": 10},
                             output_tokens={"kind": "constant", "tokens": 10})
    with pytest.raises(DcsimError, match="session_id column"):
        simulate(scenario_from_data(d))


def test_a_traced_prefix_longer_than_its_prompt_is_refused(tmp_path):
    d = _traced(tmp_path, [(0, 300, 80, "", "x"), (10, 200, 60, "", "x")],
                shared_prefix={"tokens": 256})
    with pytest.raises(DcsimError, match="fewer tokens than every traced prompt"):
        simulate(scenario_from_data(d))
