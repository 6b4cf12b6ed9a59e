"""A strategy's behaviour is asked of its rules object (securediff/strategy_rules.py),
never decided by comparing its name: a name comparison elsewhere is a fact about the
strategy that its registration does not know, and that a new strategy silently misses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from securediff.config import STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("securediff", "cli", "audits")
REGISTRATION = Path("securediff/strategy_rules.py")
NAMES = frozenset(STRATEGIES)


def _names_in(node: ast.AST | None) -> set[str]:
    """The strategy names a literal spells: a string, or a tuple, list or set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} & NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_names_in(e) for e in node.elts))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("frozenset", "set",
                                                                                          "tuple") and node.args:
        return _names_in(node.args[0])
    return set()


def name_dispatch(source: str) -> list[tuple[int, str]]:
    """(line, what) for each place `source` decides something by a strategy's name:
    a comparison with a name (or with a module constant that lists names), a match
    case on one, or a mapping keyed by names."""
    tree = ast.parse(source)
    constants = {t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
                 for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                 if isinstance(t, ast.Name) and _names_in(node.value)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                names = _names_in(operand)
                if isinstance(operand, ast.Name) and operand.id in constants:
                    names = {operand.id}
                if names:
                    found.append((node.lineno, f"compares with {', '.join(sorted(names))}"))
        elif isinstance(node, ast.MatchValue) and _names_in(node.value):
            found.append((node.lineno, f"matches {', '.join(sorted(_names_in(node.value)))}"))
        elif isinstance(node, ast.Dict):
            # Keyed by names: two or more of them, or nothing but them ("local" alone
            # is also an ordinary key).
            keys = set().union(*(_names_in(k) for k in node.keys))
            if len(keys) > 1 or (keys and all(_names_in(k) for k in node.keys)):
                found.append((node.lineno, f"maps {', '.join(sorted(keys))}"))
    return found


@pytest.mark.parametrize("snippet", [
    'if cfg.federation.strategy == "pfdm": pass',
    'x = strategy not in ("local", "local+public")',
    'name = cfg.federation.strategy\nok = name in ("pfdm", "layer-split")',
    'SHARED = ("pfdm", "fedavg")\ndef f(s):\n    return s in SHARED',
    'text = {"pfdm": "a", "fedavg": "b"}[strategy]',
    'ARTEFACT = {"layer-split": "shared"}',
    'match strategy:\n    case "hybrid":\n        pass',
])
def test_the_guard_sees_each_way_of_dispatching_on_a_name(snippet):
    assert name_dispatch(snippet)


@pytest.mark.parametrize("snippet", [
    'if artefact == "shared": pass',
    'Method("local", "local", "none", None)',
    'defaults = {"federation": {"strategy": "pfdm"}}',
    'row = {"local": local.name, **changes}',
    'rules = STRATEGY_RULES[cfg.federation.strategy]',
])
def test_the_guard_leaves_other_strings_and_lookups_alone(snippet):
    assert not name_dispatch(snippet)


def test_no_module_dispatches_on_a_strategy_name_outside_the_registration():
    offences = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel == REGISTRATION:
                continue
            offences += [f"{rel}:{line}: {what}" for line, what in name_dispatch(path.read_text())]
    assert not offences, "ask the strategy's rules object instead:\n" + "\n".join(offences)
