"""Set-up for a Flower run: identity keys per party and the roster that pins them.

Each organisation runs `keygen` on its own machine; only the `.pub` file (32
bytes of hex) leaves it. Whoever sets the run up collects the `.pub` files into
`roster.json` (`make_roster`) and hands that to every party out of band.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from protocols.errors import RosterError
from protocols.hazmat.keyfile import write_key_file
from protocols.messages import check_party_id
from protocols.roster import Roster, save_roster

_HEX = re.compile(r"[0-9a-f]{64}")


def keygen(parties: Sequence[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write `<party>.key` (private, mode 0600) and `<party>.pub` for each party."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for party in parties:
        try:
            check_party_id(party)
        except ValueError as exc:
            raise RosterError(str(exc)) from None
        key = write_key_file(out / f"{party}.key")
        pub = out / f"{party}.pub"
        pub.write_text(key.public_key.hex() + "\n", encoding="ascii")
        written += [out / f"{party}.key", pub]
    return written


def make_roster(pub_files: Sequence[str | os.PathLike[str]], *, aggregator: str,
                out: str | os.PathLike[str]) -> Roster:
    """A roster from `<party>.pub` files (the party is the file's stem)."""
    keys = {}
    for path in map(Path, pub_files):
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RosterError(f"cannot read {path}: {exc}") from None
        if not _HEX.fullmatch(text) or path.stem in keys:
            raise RosterError(f"{path}: not a public key file, or a party named twice")
        keys[path.stem] = bytes.fromhex(text)
    if aggregator not in keys:
        raise RosterError(f"no {aggregator}.pub among the files: the roster pins the aggregator")
    roster = Roster.from_keys(keys, aggregator_id=aggregator)
    save_roster(out, roster)
    return roster


def supernode_command(*, client_id: str, identity_key: str, roster: str, superlink: str,
                      port: int, root_certificates: str | None,
                      auth_key: str | None = None,
                      extra: Mapping[str, str | int | float | bool] | None = None) -> list[str]:
    """The `flower-supernode` command line of one organisation's node; `extra`:
    further node-config entries (the data and state settings of a training node)."""
    entries = {"client-id": client_id, "identity-key": identity_key, "roster": roster,
               **(extra or {})}
    if any("'" in str(v) for v in entries.values()):
        raise RosterError("paths and ids in the node config cannot contain a single quote")
    node_config = " ".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" if isinstance(v, int | float)
        else f"{k}='{v}'" for k, v in entries.items()
    )
    cmd = ["flower-supernode", "--superlink", superlink, "--port", str(port),
           "--node-config", node_config]
    if root_certificates is None:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", root_certificates]
        if auth_key is not None:
            cmd += ["--auth-supernode-private-key", auth_key]
    return cmd
