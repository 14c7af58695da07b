"""Axis paths into a scenario, the points of a sweep, and their checks before any run."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import warnings

import numpy as np
from scipy.stats import qmc

from dcsim.errors import DcsimError, Problem
from dcsim.scenario import Scenario, scenario_from_data
from dcsim.sweep.spec import Axis, Grid, LatinHypercube, RandomSample, Scalar, Sobol, SweepSpec


def _step(node: object, key: str) -> tuple[object, object] | None:
    """The child of `node` at `key` and the key to set it by (None: no such child)."""
    if isinstance(node, dict):
        return (node[key], key) if key in node else None
    if isinstance(node, list):
        if key.lstrip("-").isdigit() and -len(node) <= int(key) < len(node):
            return node[int(key)], int(key)
        named = [i for i, item in enumerate(node) if isinstance(item, dict)
                 and item.get("name") == key]
        return (node[named[0]], named[0]) if len(named) == 1 else None
    return None


def _choices(node: object) -> str:
    if isinstance(node, dict):
        return ", ".join(sorted(node))
    if isinstance(node, list):
        names = [str(x["name"]) for x in node if isinstance(x, dict) and "name" in x]
        return f"an index 0-{len(node) - 1}" + (f" or a name: {', '.join(names)}" if names
                                                 else "")
    return "nothing: this field has no parts"


def set_path(data: dict, path: str, value: Scalar, where: str) -> dict:
    """A copy of `data` with the field at `path` set to `value`; a clear error if the path
    is not a field of the (resolved) scenario."""
    out = copy.deepcopy(data)
    node: object = out
    keys = path.split(".")
    for i, key in enumerate(keys):
        found = _step(node, key)
        if found is None:
            raise DcsimError(Problem(where, path, f"a field of the scenario: at "
                                     f"'{'.'.join(keys[:i]) or '(top)'}' one of "
                                     f"{_choices(node)}"))
        child, k = found
        if i == len(keys) - 1:
            node[k] = value  # type: ignore[index]
        node = child
    return out


def field_title(s: Scenario, path: str) -> str:
    """A reader's title for the field at `path`: its schema description (first sentence)
    and the path, or the path alone where the schema has none."""
    node: object = s
    keys = path.split(".")
    for key in keys[:-1]:
        if isinstance(node, list | tuple):
            named = [x for x in node if getattr(x, "name", None) == key]
            node = named[0] if named else (node[int(key)] if key.lstrip("-").isdigit()
                                           else None)
        elif isinstance(node, dict):
            node = node.get(key)
        else:
            node = getattr(node, key, None)
    fields = getattr(type(node), "model_fields", {})
    info = fields.get(keys[-1])
    text = (info.description or "").split(". ")[0].rstrip(".") if info else ""
    return f"{text} ({path})" if text else path


def axis_values(axis: Axis) -> list[Scalar]:
    """The values an axis takes: its list, or its range's points (grid) or bounds (samples)."""
    if axis.values is not None:
        return list(axis.values)
    r = axis.range
    assert r is not None
    v = np.linspace(r.start, r.stop, r.num)
    return [round(x) for x in v] if r.integer else [float(x) for x in v]


def sample(spec: SweepSpec) -> list[tuple[Scalar, ...]]:
    """Axis-value combinations: the full grid, or random, Latin-hypercube or Sobol'
    draws (scipy.stats.qmc), seeded by sample_seed."""
    values = [axis_values(a) for a in spec.axes]
    s = spec.sample
    if isinstance(s, Grid):
        return list(itertools.product(*values))
    rng = np.random.default_rng(spec.sample_seed)
    d = len(spec.axes)
    if isinstance(s, RandomSample):
        u = rng.random((d, s.points)).T  # axis by axis, as earlier versions drew them
    elif isinstance(s, LatinHypercube):  # each of `points` strata of each axis once
        u = qmc.LatinHypercube(d=d, rng=rng).random(s.points)
    else:
        assert isinstance(s, Sobol)
        with warnings.catch_warnings():  # a count that is not a power of two is allowed
            warnings.simplefilter("ignore", UserWarning)
            u = qmc.Sobol(d=d, scramble=True, rng=rng).random(s.points)
    cols = [_at(axis, vals, u[:, i])
            for i, (axis, vals) in enumerate(zip(spec.axes, values, strict=True))]
    return list(zip(*cols, strict=True))


def _at(axis: Axis, vals: list[Scalar], u: np.ndarray) -> list[Scalar]:
    """Values at quantiles u in [0, 1): continuous within a range, else an item of the list."""
    r = axis.range
    if r is not None and not r.integer:
        return [float(r.start + (r.stop - r.start) * x) for x in u]
    return [vals[min(int(x * len(vals)), len(vals) - 1)] for x in u]


def point_id(combo: tuple[Scalar, ...]) -> str:
    """A stable name for a point (its axis values): the same values, the same name."""
    key = json.dumps(list(combo), sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def check(spec: SweepSpec, base: Scenario, origin: str) -> list[tuple[tuple[Scalar, ...], dict]]:
    """Every point's scenario data, validated before anything runs: unknown paths and
    values the schema rejects are reported with the axis they came from."""
    data = base.model_dump(mode="json")
    problems: list[Problem] = []
    for i, axis in enumerate(spec.axes):
        for v in axis_values(axis):
            d = set_path(data, axis.path, v, f"axes[{i}].path")  # an unknown path stops here
            problems += _rejected(d, f"axes[{i}] ({axis.path} = {v!r})", origin)
    if problems:
        raise DcsimError(problems)
    out = []
    for combo in sample(spec):
        d = data
        for i, (axis, v) in enumerate(zip(spec.axes, combo, strict=True)):
            d = set_path(d, axis.path, v, f"axes[{i}].path")
        # values fine one at a time can still clash together
        problems = _rejected(d, f"point {dict(zip([a.path for a in spec.axes], combo, strict=True))}",
                             origin)
        if problems:
            raise DcsimError(problems)
        out.append((combo, d))
    return out


def _rejected(data: dict, where: str, origin: str) -> list[Problem]:
    try:
        scenario_from_data(data, origin)
    except DcsimError as exc:
        return [Problem(f"{where}: {p.path}", p.value, p.expected, origin) for p in exc.problems]
    return []
