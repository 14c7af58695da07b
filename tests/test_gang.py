"""The scheduling core shared by training jobs and cluster pods, on a hand-checked toy:
one pool of 8 GPUs, 6 in use until t = 10; gangs (name, GPUs, run time, priority)."""

from dcsim.engine.gang import queue_order, schedule_pass

QUEUE = [("a", 4, 5.0, 0), ("b", 2, 20.0, 1), ("c", 2, 8.0, 2), ("d", 1, 30.0, 0)]


def _run(policy):
    free, started = [2], []

    def fit(g):
        return g[1] if g[1] <= free[0] else None

    def start(g, n):
        free[0] -= n
        started.append(g[0])

    def reserve(g):  # the running 6 GPUs end at t = 10: then 8 - g's GPUs are left over
        return {"time_s": 10.0, "extra": 8 - g[1] - free[0]}

    def backfill(g, held):
        n = fit(g)
        if n is None:
            return None
        if g[2] <= held["time_s"]:  # ends before the reservation (now = 0)
            return n
        if n <= held["extra"]:
            held["extra"] -= n
            return n
        return None

    order = queue_order(QUEUE, policy, lambda g: (-g[3],))
    schedule_pass(order, policy, fit, start, reserve, backfill)
    return started


def test_fifo_stops_at_the_blocked_head():
    assert _run("fifo") == []  # a needs 4 of 2 free


def test_priority_orders_by_priority_then_arrival_and_stops_when_blocked():
    assert [g[0] for g in queue_order(QUEUE, "priority", lambda g: (-g[3],))] == [
        "c", "b", "a", "d"]
    assert _run("priority") == ["c"]  # c takes the 2 free GPUs, b is blocked


def test_easy_backfill_lets_only_gangs_that_do_not_delay_the_head_jump_ahead():
    # a is reserved at t = 10 with 8 - 4 - 2 = 2 GPUs to spare then; b (20 s) would
    # outlive the reservation but fits in the spare 2: it starts and uses them up; c
    # would end in time but no GPU is left now; d neither ends in time nor fits
    assert _run("easy_backfill") == ["b"]
