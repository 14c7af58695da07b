"""A strict YAML reader for scenario and sweep files.

Safe loading only (no Python objects), and three refusals that plain safe_load lacks:
aliases (`*a`) that expand the document by more than MAX_ALIAS_NODES nodes (nested
aliases can blow a small file up to gigabytes once validated: a "billion laughs"
bomb; an anchor reused a few times, as PyYAML itself writes shared values, is fine);
a key given twice in one mapping (the second silently wins otherwise); nesting deeper
than MAX_DEPTH. Each is an error with the line and column.
"""

from __future__ import annotations

import yaml

from dcsim.errors import shorten

MAX_DEPTH = 64  # a scenario nests about 8 deep
MAX_ALIAS_NODES = 1_000_000  # nodes aliases may add to the document once expanded


class StrictYamlError(yaml.MarkedYAMLError):
    """A construct the strict reader refuses, with where it is."""


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        """The base composer, refusing nesting deeper than MAX_DEPTH."""
        ev = self.peek_event()
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise StrictYamlError(None, None, f"at most {MAX_DEPTH} levels of nesting",
                                      ev.start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """The base constructor, refusing a key given twice in one mapping."""
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


def _sizes(root: yaml.Node) -> tuple[int, int]:
    """Nodes of the document as written (each once) and once every alias is expanded."""
    expanded: dict[int, int] = {}
    order: list[yaml.Node] = []
    stack = [root]
    while stack:  # each distinct node once, children before parents in `order`
        n = stack.pop()
        if id(n) in expanded:
            continue
        expanded[id(n)] = 0
        order.append(n)
        stack += _children(n)
    for n in reversed(order):
        expanded[id(n)] = 1 + sum(expanded[id(c)] for c in _children(n))
    return len(order), expanded[id(root)]


def _children(n: yaml.Node) -> list[yaml.Node]:
    if isinstance(n, yaml.MappingNode):
        return [x for pair in n.value for x in pair]
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    return []


def load(text: str) -> object:
    """Parse YAML text strictly (see the module docstring); yaml.YAMLError on failure."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        unique, expanded = _sizes(node)
        if expanded - unique > MAX_ALIAS_NODES:
            raise StrictYamlError(None, None, f"aliases that add at most {MAX_ALIAS_NODES:,} "
                                  f"nodes (these expand {unique:,} nodes to {expanded:,})",
                                  node.start_mark)
        return loader.construct_document(node)
    finally:
        loader.dispose()


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        """Never write anchors and aliases."""
        return True  # an object used twice is written out twice: easier to read


def dump(data: object) -> str:
    """YAML text of plain data, keys in their order, without anchors or aliases."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)
