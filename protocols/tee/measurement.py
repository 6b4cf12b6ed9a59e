"""The enclave measurement: SHA-384 over a canonical manifest of the aggregator's
code files and its configuration (the analogue of SGX's MRENCLAVE or the SEV-SNP
launch measurement).

The manifest lists every file the enclave aggregator executes, each with its
own SHA-384, plus the configuration that changes what the aggregator does. Any
edit to one of those files or to the configuration gives another measurement,
so a client's allowlist pins both the code and how it is run. Files are hashed
as bytes: a changed line ending is a changed enclave.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocols.errors import ProtocolInputError
from protocols.messages import canonical_json

MANIFEST_VERSION = 1
_DOMAIN = b"securediff/tee/measurement/v1\n"

# What runs inside the enclave, relative to the repository root: the enclave
# aggregator and everything it executes from `protocols`.
ENCLAVE_FILES: tuple[str, ...] = (
    "protocols/errors.py",
    "protocols/hazmat/aead.py",
    "protocols/hazmat/kdf.py",
    "protocols/hazmat/kex.py",
    "protocols/messages.py",
    "protocols/stages.py",
    "protocols/tee/channel.py",
    "protocols/tee/enclave.py",
    "protocols/tee/measurement.py",
    "protocols/tee/messages.py",
    "protocols/tee/quote.py",
    "protocols/tee/sealing.py",
)

CODE_ROOT = Path(__file__).resolve().parents[2]


def enclave_config(*, min_survivors: int) -> dict[str, Any]:
    """The configuration the measurement covers: what the enclave does with updates."""
    return {"protocol": "tee", "min_survivors": min_survivors}


def manifest(
    *, config: Mapping[str, Any], root: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The canonical manifest of the enclave code under `root` (default: this checkout)."""
    base = Path(root) if root is not None else CODE_ROOT
    files = []
    for rel in ENCLAVE_FILES:
        try:
            data = (base / rel).read_bytes()
        except OSError as exc:
            raise ProtocolInputError(f"cannot measure {rel}: {exc}") from None
        files.append({"path": rel, "sha384": hashlib.sha384(data).hexdigest()})
    return {"v": MANIFEST_VERSION, "kind": "securediff-enclave-manifest",
            "files": files, "config": dict(config)}


def measure(*, config: Mapping[str, Any], root: str | os.PathLike[str] | None = None) -> str:
    """The measurement (96 hex digits) of the enclave code under `root` run with `config`."""
    return hashlib.sha384(_DOMAIN + canonical_json(manifest(config=config, root=root))).hexdigest()
