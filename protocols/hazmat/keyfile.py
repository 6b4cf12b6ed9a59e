"""Identity keys kept in files, for parties that run on their own machines.

`signing.py` keeps keys in memory only, which suits the in-process simulation
(its keys die with the run). Across machines each organisation's identity key
must outlive the short-lived processes Flower starts per message and must be
pinned in a roster before the run, so it is written once, on the party's own
machine, as unencrypted PKCS#8 PEM readable by its owner only (mode 0600). The
public half goes to the roster; the private file never leaves the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from protocols.errors import RosterError
from protocols.hazmat.signing import SigningKey


def write_key_file(path: str | os.PathLike[str]) -> SigningKey:
    """Generate a key into a new file `path` (never overwrites); returns the key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise RosterError(f"{path} exists: refusing to overwrite an identity key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return SigningKey(key)


def read_key_file(path: str | os.PathLike[str]) -> SigningKey:
    """Load an Ed25519 identity key written by `write_key_file`."""
    try:
        data = Path(path).read_bytes()
        key = load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise RosterError(f"cannot read identity key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RosterError(f"{path} is not an Ed25519 private key")
    return SigningKey(key)
