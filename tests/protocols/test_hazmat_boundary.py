"""Hazmat is complete enough to stay behind: outside `protocols/hazmat/` no module
imports `cryptography`, except the simulated TEE's X.509 certificate handling
(certificates, their P-384 keys and encodings), which stays where it is."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("securediff", "protocols", "cli", "audits")
X509_MODULES = {
    "protocols/tee/quote.py",
    "protocols/tee/protocol.py",
    "protocols/tee/vendor.py",
    "protocols/tee/verify.py",
}


def _cryptography_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "cryptography"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cryptography":
            found.append(node.module)
    return found


def test_only_hazmat_and_the_tee_certificates_import_cryptography():
    offenders = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("protocols/hazmat/") or rel in X509_MODULES:
                continue
            if imports := _cryptography_imports(path):
                offenders[rel] = imports
    assert not offenders, f"use protocols.hazmat instead: {offenders}"


def test_the_tee_certificate_modules_use_no_aead_key_agreement_or_cipher():
    for rel in sorted(X509_MODULES):
        for module in _cryptography_imports(ROOT / rel):
            assert not any(part in module for part in ("ciphers", "x25519", "ed25519", "kdf")), (
                rel, module)
