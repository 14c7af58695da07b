"""A strict YAML reader for scenario and sweep files.

Safe loading only (no Python objects), and three refusals that plain safe_load lacks:
anchors and aliases (`&a` / `*a`): a scenario needs neither, and nested aliases can
expand a small file into gigabytes (a "billion laughs" bomb); a key given twice in
one mapping (the second silently wins otherwise); nesting deeper than MAX_DEPTH.
Each is an error with the line and column.
"""

from __future__ import annotations

import yaml

from dcsim.errors import shorten

MAX_DEPTH = 64  # a scenario nests about 8 deep


class StrictYamlError(yaml.MarkedYAMLError):
    """A construct the strict reader refuses, with where it is."""


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise StrictYamlError(None, None, "YAML without aliases (found *"
                                  f"{ev.anchor}: write the value out)", ev.start_mark)
        ev = self.peek_event()
        if getattr(ev, "anchor", None):
            raise StrictYamlError(None, None, "YAML without anchors (found &"
                                  f"{ev.anchor}: write the value out where it is used)",
                                  ev.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise StrictYamlError(None, None, f"at most {MAX_DEPTH} levels of nesting",
                                      ev.start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise StrictYamlError(None, None, "each key once in a mapping (found "
                                          f"{shorten(repr(key))} again)", key_node.start_mark)
            except TypeError:  # an unhashable key: let the base class say so
                continue
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(text: str) -> object:
    """Parse YAML text strictly (see the module docstring); yaml.YAMLError on failure."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
