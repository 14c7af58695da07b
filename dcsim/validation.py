"""Turn pydantic errors into Problems a user can act on."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ValidationError

from dcsim.errors import Problem, format_loc

_UNION_FIELDS = {"arrival", "prompt_tokens", "output_tokens", "workloads", "deployment"}


def _model_at(root: type[BaseModel], loc: tuple[object, ...]) -> type[BaseModel] | None:
    """The model class that owns the last part of `loc`, when it can be found."""
    current: object = root
    for part in loc[:-1]:
        current = _step(current, part)
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _step(tp: object, part: object) -> object:
    tp = _unwrap(tp)
    if isinstance(part, int):
        args = typing.get_args(tp)
        return _unwrap(args[0]) if args else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(part))
        return _unwrap(field.annotation) if field else None
    for arm in typing.get_args(tp):  # a union: pick the arm whose kind tag matches
        arm = _unwrap(arm)
        if isinstance(arm, type) and issubclass(arm, BaseModel):
            kind = arm.model_fields.get("kind")
            if kind is not None and kind.default == part:
                return arm
            if kind is None and arm.__name__.lower() == part:  # tagged by class name
                return arm
    return None


def _unwrap(tp: object) -> object:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _unwrap(args[0])
    return tp


def _clean_loc(loc: tuple[object, ...]) -> tuple[object, ...]:
    """Drop the discriminator tags pydantic inserts after a list index or union field."""
    out: list[object] = []
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i else None
        is_tag = isinstance(part, str) and (isinstance(prev, int) or prev in _UNION_FIELDS)
        if is_tag and _looks_like_tag(part):
            continue
        out.append(part)
    return tuple(out)


def _looks_like_tag(part: str) -> bool:
    from dcsim.workloads.deployment import DEPLOYMENTS
    from dcsim.workloads.spec import ARRIVALS, LENGTHS, WORKLOADS

    return part in ARRIVALS or part in LENGTHS or part in WORKLOADS or part in DEPLOYMENTS


def pydantic_problems(exc: ValidationError, root: type[BaseModel], origin: str) -> list[Problem]:
    """pydantic's validation errors as Problems with field paths, values shortened, and what
    is expected."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            owner = _model_at(root, loc)
            allowed = ", ".join(owner.model_fields) if owner else ""
            msg = f"no field named {loc[-1]!r} here" + (f"; known fields: {allowed}" if allowed else "")
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        else:
            msg = msg[0].lower() + msg[1:]
        value = err.get("input") if err["type"] != "missing" else "<missing>"
        if isinstance(value, dict):  # a whole-object rule: its message names the values
            value = None
        problems.append(Problem(format_loc(_clean_loc(loc)), value, msg, origin))
    return problems
