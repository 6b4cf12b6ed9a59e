"""Ed25519 signing (pinned to RFC 8032), rosters and in-memory identities."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest

from protocols.errors import RosterError
from protocols.hazmat.signing import SigningKey, verify_signature
from protocols.roster import Identities, Roster, load_rosters, save_roster

# RFC 8032, section 7.1, TEST 1 (empty message) and TEST 2 (one byte, 0x72)
RFC_VECTORS = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        b"",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        b"\x72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize(("public", "message", "signature"), RFC_VECTORS)
def test_verify_matches_rfc8032(public: str, message: bytes, signature: str) -> None:
    pk, sig = bytes.fromhex(public), bytes.fromhex(signature)
    assert verify_signature(public_key=pk, message=message, signature=sig)
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify_signature(public_key=pk, message=message, signature=flipped)
    assert not verify_signature(public_key=pk, message=message + b"x", signature=sig)
    assert not verify_signature(public_key=pk[:31], message=message, signature=sig)
    assert not verify_signature(public_key=pk, message=message, signature=sig[:63])


def test_generated_keys_sign_and_stay_in_memory() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    sig = key.sign(b"round 3")
    assert verify_signature(public_key=key.public_key, message=b"round 3", signature=sig)
    assert not verify_signature(public_key=other.public_key, message=b"round 3", signature=sig)
    assert "public=" in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_roster_digest_is_pinned() -> None:
    roster = Roster.from_keys(
        {"c0": b"\x01" * 32, "aggregator": b"\x00" * 32}, aggregator_id="aggregator"
    )
    text = (
        '{"aggregator":"aggregator","keys":{"aggregator":"'
        + "00" * 32
        + '","c0":"'
        + "01" * 32
        + '"},'
        '"kind":"roster","v":1}'
    )
    assert roster.digest == hashlib.sha256(text.encode()).hexdigest()
    assert roster.client_ids == ("c0",) and "c0" in roster and "c9" not in roster
    assert roster.public_key("c0") == b"\x01" * 32
    with pytest.raises(RosterError):
        roster.public_key("c9")


def test_identities_make_a_roster_that_round_trips(tmp_path: Path) -> None:
    ids = Identities.generate(["b", "a"], aggregator_id="hub")
    roster = ids.roster()
    assert roster.client_ids == ("a", "b") and roster.aggregator_id == "hub"
    assert roster.public_key("a") == ids.signing_key("a").public_key
    path = tmp_path / "roster.json"
    save_roster(path, roster)
    assert load_rosters(path) == (roster,)
    later = Identities.generate(["a", "b"], aggregator_id="hub").roster()
    save_roster(path, later, append=True)
    save_roster(path, later, append=True)  # idempotent
    assert load_rosters(path) == (roster, later)
    assert json.loads(path.read_text())["v"] == 1


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"v": 2, "kind": "roster", "aggregator": "a", "keys": {}},
        {"v": 1, "kind": "roster", "aggregator": "agg", "keys": {"c0": "00" * 32}},
        {
            "v": 1,
            "kind": "roster",
            "aggregator": "agg",
            "keys": {"agg": "00" * 32, "c0": "AB" * 32},
        },
        {
            "v": 1,
            "kind": "roster",
            "aggregator": "agg",
            "keys": {"agg": "00" * 32, "c 0": "00" * 32},
        },
        {"v": 1, "kind": "roster", "aggregator": "agg", "keys": {"agg": "00" * 32}},
        {"v": 1, "rosters": []},
    ],
)
def test_malformed_rosters_are_refused(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "roster.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(RosterError):
        load_rosters(path)


def test_unreadable_roster_and_bad_identities() -> None:
    with pytest.raises(RosterError, match="cannot read"):
        load_rosters("/nonexistent/roster.json")
    for bad in (["a", "a"], ["aggregator"], []):
        with pytest.raises(RosterError):
            Identities.generate(bad)
    with pytest.raises(RosterError):
        Identities.generate(["a"]).signing_key("zed")
