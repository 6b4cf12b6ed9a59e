"""Identity keys and the roster that pins them.

`Identities` holds every party's Ed25519 private key in memory (the in-process
simulation plays all parties); `Roster` is the public half, made at set-up,
handed to every party out of band and stored as the run's `roster.json`. A
transcript names the roster by its SHA-256 digest, and a reviewer verifies the
transcript against rosters they obtained independently.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import RosterError
from protocols.hazmat.signing import PUBLIC_KEY_BYTES, SigningKey
from protocols.messages import canonical_json, check_party_id, sha256_hex

ROSTER_VERSION = 1
_HEX_KEY = re.compile(rf"[0-9a-f]{{{2 * PUBLIC_KEY_BYTES}}}")


@dataclass(frozen=True)
class Roster:
    """Pinned public keys: `keys` maps every party (clients and aggregator) to hex."""

    aggregator_id: str
    keys: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        ids = [party for party, _ in self.keys]
        if ids != sorted(set(ids)):
            raise RosterError("roster parties must be unique and sorted")
        for party, key in self.keys:
            try:
                check_party_id(party)
            except ValueError as exc:
                raise RosterError(str(exc)) from None
            if not isinstance(key, str) or _HEX_KEY.fullmatch(key) is None:
                raise RosterError(f"roster key of {party!r} is not 32 bytes of lowercase hex")
        if self.aggregator_id not in ids:
            raise RosterError("the roster does not pin the aggregator's key")
        if len(ids) < 2:
            raise RosterError("a roster needs at least one client")

    @classmethod
    def from_keys(cls, keys: Mapping[str, bytes], *, aggregator_id: str) -> Roster:
        return cls(
            aggregator_id=aggregator_id, keys=tuple(sorted((p, k.hex()) for p, k in keys.items()))
        )

    @property
    def client_ids(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.keys if p != self.aggregator_id)

    @functools.cached_property
    def _by_party(self) -> dict[str, bytes]:
        # A client checks every routed key set against the roster: a linear scan per
        # lookup made that n^2 per client (docs/performance.md).
        return {p: bytes.fromhex(key) for p, key in self.keys}

    def __contains__(self, party: object) -> bool:
        return isinstance(party, str) and party in self._by_party

    def public_key(self, party: str) -> bytes:
        try:
            return self._by_party[party]
        except (KeyError, TypeError):
            raise RosterError(f"{party!r} is not in the roster") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": ROSTER_VERSION,
            "kind": "roster",
            "aggregator": self.aggregator_id,
            "keys": dict(self.keys),
        }

    @property
    def digest(self) -> str:
        return sha256_hex(canonical_json(self.to_dict()))

    @classmethod
    def from_dict(cls, obj: Any) -> Roster:
        if (
            not isinstance(obj, dict)
            or set(obj) != {"v", "kind", "aggregator", "keys"}
            or obj["v"] != ROSTER_VERSION
            or obj["kind"] != "roster"
            or not isinstance(obj["keys"], dict)
            or not isinstance(obj["aggregator"], str)
        ):
            raise RosterError("not a version-1 roster object")
        return cls(aggregator_id=obj["aggregator"], keys=tuple(sorted(obj["keys"].items())))


class Identities:
    """Every party's signing key, in memory only (see `protocols.hazmat.signing`)."""

    def __init__(self, keys: Mapping[str, SigningKey], *, aggregator_id: str) -> None:
        self._keys = dict(keys)
        self.aggregator_id = aggregator_id
        self._roster = Roster.from_keys(
            {p: k.public_key for p, k in self._keys.items()}, aggregator_id=aggregator_id
        )

    @classmethod
    def generate(
        cls, client_ids: Iterable[str], *, aggregator_id: str = "aggregator"
    ) -> Identities:
        ids = [check_party_id(c) for c in client_ids]
        if len(set(ids)) != len(ids) or check_party_id(aggregator_id) in ids or not ids:
            raise RosterError(
                "client ids must be non-empty, distinct, and differ from the aggregator's"
            )
        return cls(
            {p: SigningKey.generate() for p in [*ids, aggregator_id]}, aggregator_id=aggregator_id
        )

    @property
    def client_ids(self) -> tuple[str, ...]:
        return self._roster.client_ids

    def roster(self) -> Roster:
        return self._roster

    def signing_key(self, party: str) -> SigningKey:
        try:
            return self._keys[party]
        except KeyError:
            raise RosterError(f"no identity key for {party!r}") from None

    def __repr__(self) -> str:
        return f"Identities(aggregator={self.aggregator_id!r}, clients={len(self.client_ids)})"


def load_rosters(path: str | os.PathLike[str]) -> tuple[Roster, ...]:
    """Read `roster.json`: one roster object, or {"rosters": [...]} after resumed sessions."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RosterError(f"cannot read roster {path}: {exc}") from None
    if isinstance(obj, dict) and set(obj) == {"v", "rosters"} and isinstance(obj["rosters"], list):
        if obj["v"] != ROSTER_VERSION or not obj["rosters"]:
            raise RosterError(f"{path}: unsupported roster list")
        return tuple(Roster.from_dict(r) for r in obj["rosters"])
    return (Roster.from_dict(obj),)


def save_roster(path: str | os.PathLike[str], roster: Roster, *, append: bool = False) -> None:
    """Write `roster` to `path`; with `append`, keep the rosters of earlier sessions too."""
    earlier: Sequence[Roster] = load_rosters(path) if append and Path(path).exists() else ()
    rosters = [r for r in earlier if r.digest != roster.digest] + [roster]
    obj: Any = (
        rosters[0].to_dict()
        if len(rosters) == 1
        else {"v": ROSTER_VERSION, "rosters": [r.to_dict() for r in rosters]}
    )
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
