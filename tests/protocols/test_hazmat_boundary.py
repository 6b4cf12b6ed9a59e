"""Hazmat is complete enough to stay behind: outside `protocols/hazmat/` no module
imports `cryptography` (the simulated TEE's certificates, P-384 keys and quote
signatures go through `protocols.hazmat.certificates` too)."""

import ast
import importlib
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("securediff", "protocols", "cli", "audits")


def _cryptography_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "cryptography"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cryptography":
            found.append(node.module)
    return found


def test_only_hazmat_imports_cryptography():
    offenders = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("protocols/hazmat/"):
                continue
            if imports := _cryptography_imports(path):
                offenders[rel] = imports
    assert not offenders, f"use protocols.hazmat instead: {offenders}"


def test_no_cryptography_object_is_reached_through_hazmat():
    """Nor under another name: what other modules import from protocols.hazmat is the
    hazmat layer's own (functions, wrappers, errors), never a backend class."""
    reexported = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("protocols/hazmat/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.ImportFrom)
                        and (node.module or "").startswith("protocols.hazmat")):
                    continue
                module = importlib.import_module(node.module)
                for alias in node.names:
                    obj = getattr(module, alias.name)
                    origin = getattr(obj, "__module__", None) or type(obj).__module__
                    if not inspect.ismodule(obj) and str(origin).startswith("cryptography"):
                        reexported.setdefault(rel, []).append(f"{node.module}.{alias.name}")
    assert not reexported, reexported
