"""Quotes of the simulated enclave: each attestation failure class is refused with its
own error, the measurement tracks the code, and sealed state opens only for the same
code on the same platform."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from protocols.errors import ProtocolAbort
from protocols.tee import (
    ATTESTATION_CHECKS,
    ENCLAVE_FILES,
    AttestationPolicy,
    CertificateChainError,
    DebugEnclaveError,
    KeyBindingError,
    MalformedQuoteError,
    MeasurementError,
    Quote,
    QuoteSignatureError,
    ReplayCache,
    ReplayedNonceError,
    SimulatedPlatform,
    SimulatedQuoteError,
    SimulatedRootError,
    SimulatedVendor,
    StaleSvnError,
    UnsealError,
    enclave_config,
    manifest,
    measure,
    report_data,
    verify_quote,
)
from protocols.tee.enclave import SimulatedEnclave
from protocols.tee.measurement import CODE_ROOT
from protocols.tee.sealing import Sealer

CONFIG = enclave_config(min_survivors=2)
NONCE = bytes(range(32))
HEAD = hashlib.sha256(b"round 0").digest()


@pytest.fixture(scope="module")
def platform() -> SimulatedPlatform:
    return SimulatedPlatform.create()


@pytest.fixture(scope="module")
def measurement() -> str:
    return measure(config=CONFIG)


def _quote(platform, measurement, *, svn=1, debug=False, nonce=NONCE, head=HEAD):
    enclave = SimulatedEnclave(platform=platform, measurement=measurement, min_survivors=2,
                               svn=svn, debug=debug)
    sealed = enclave.start(random_bytes=os.urandom)
    return enclave.quote(sealed, nonce=nonce, transcript_head=head), enclave.public_key(sealed)


def _verify(quote, key, measurement, **policy):
    return verify_quote(
        quote=quote,
        policy=AttestationPolicy(allowed_measurements=(measurement,), **policy),
        nonce=NONCE, enclave_public_key=key, transcript_head=HEAD, replay_cache=ReplayCache(),
    )


def test_a_good_quote_verifies_and_says_it_is_simulated(platform, measurement) -> None:
    quote, key = _quote(platform, measurement)
    body = _verify(quote, key, measurement)
    assert body.simulated is True and body.debug is False and body.measurement == measurement
    # report_data is SHA-512 over nonce || key || head, recomputed independently here
    assert body.report_data == hashlib.sha512(NONCE + key + HEAD).hexdigest()
    assert Quote.from_json(quote.to_json()).to_json() == quote.to_json()


def test_wrong_measurement(platform, measurement) -> None:
    quote, key = _quote(platform, measurement)
    with pytest.raises(MeasurementError) as err:
        _verify(quote, key, "0" * 96)
    assert err.value.check == "measurement"


def test_debug_enclave(platform, measurement) -> None:
    quote, key = _quote(platform, measurement, debug=True)
    with pytest.raises(DebugEnclaveError):
        _verify(quote, key, measurement)
    assert _verify(quote, key, measurement, allow_debug=True).debug is True


def test_stale_svn(platform, measurement) -> None:
    quote, key = _quote(platform, measurement, svn=2)
    assert _verify(quote, key, measurement, min_svn=2).svn == 2
    with pytest.raises(StaleSvnError):
        _verify(quote, key, measurement, min_svn=3)


@pytest.mark.parametrize("field", ["svn", "measurement", "debug", "signature"])
def test_bad_signature(platform, measurement, field: str) -> None:
    quote, key = _quote(platform, measurement)
    if field == "signature":
        sig = bytearray(quote.signature)
        sig[-1] ^= 1
        forged = dataclasses.replace(quote, signature=bytes(sig))
    else:  # edit the signed body after signing (a host lying about its enclave)
        value = {"svn": 9, "measurement": "f" * 96, "debug": True}[field]
        forged = dataclasses.replace(quote, body=dataclasses.replace(quote.body, **{field: value}))
    with pytest.raises(QuoteSignatureError):
        verify_quote(quote=forged, policy=AttestationPolicy(allowed_measurements=(measurement, "f" * 96)),
                     nonce=NONCE, enclave_public_key=key, transcript_head=HEAD)


def test_wrong_chain(measurement) -> None:
    rogue = SimulatedVendor.generate(name="not the vendor")
    quote, key = _quote(SimulatedPlatform.create(vendor=rogue), measurement)
    with pytest.raises(CertificateChainError):
        _verify(quote, key, measurement)
    # ... and the rogue root would accept it: the chain check is what refuses it
    assert _verify(quote, key, measurement, trusted_root=rogue.certificate).simulated


def test_expired_platform_certificate(measurement) -> None:
    old = SimulatedPlatform.create(now=dt.datetime(2010, 1, 1, tzinfo=dt.UTC))
    quote, key = _quote(old, measurement)
    with pytest.raises(CertificateChainError, match="not valid"):
        _verify(quote, key, measurement)


def test_replayed_nonce(platform, measurement) -> None:
    quote, key = _quote(platform, measurement)
    policy = AttestationPolicy(allowed_measurements=(measurement,))
    cache = ReplayCache()
    verify_quote(quote=quote, policy=policy, nonce=NONCE, enclave_public_key=key,
                 transcript_head=HEAD, replay_cache=cache)
    with pytest.raises(ReplayedNonceError, match="already used"):
        verify_quote(quote=quote, policy=policy, nonce=NONCE, enclave_public_key=key,
                     transcript_head=HEAD, replay_cache=cache)
    # an old quote offered against a new challenge is not fresh either
    with pytest.raises(ReplayedNonceError, match="another nonce"):
        verify_quote(quote=quote, policy=policy, nonce=os.urandom(32), enclave_public_key=key,
                     transcript_head=HEAD, replay_cache=ReplayCache())


def test_replay_cache_forgets_oldest_beyond_capacity() -> None:
    cache = ReplayCache(capacity=2)
    for n in (b"a", b"b", b"c"):
        cache.add(n)
    assert b"a" not in cache and b"b" in cache and cache.nonces() == (b"b", b"c")


def test_key_not_bound(platform, measurement) -> None:
    quote, key = _quote(platform, measurement)
    host_key = os.urandom(32)
    with pytest.raises(KeyBindingError, match="another enclave key"):
        _verify(quote, host_key, measurement)  # the host offers its own key
    swapped = dataclasses.replace(
        quote, evidence=dataclasses.replace(quote.evidence, enclave_public_key=host_key))
    with pytest.raises(KeyBindingError, match="report_data"):
        _verify(swapped, host_key, measurement)  # and rewrites the evidence too
    with pytest.raises(KeyBindingError, match="transcript head"):
        verify_quote(quote=quote, policy=AttestationPolicy(allowed_measurements=(measurement,)),
                     nonce=NONCE, enclave_public_key=key, transcript_head=bytes(32))


def test_production_rejects_simulated_quotes(platform, measurement) -> None:
    quote, key = _quote(platform, measurement)
    with pytest.raises(SimulatedQuoteError):
        _verify(quote, key, measurement, production=True)


def test_every_failure_is_a_protocol_abort_with_a_distinct_check() -> None:
    classes = [MeasurementError, DebugEnclaveError, StaleSvnError, QuoteSignatureError,
               CertificateChainError, ReplayedNonceError, KeyBindingError, SimulatedQuoteError,
               SimulatedRootError, MalformedQuoteError]
    assert all(issubclass(c, ProtocolAbort) for c in classes)
    assert len({c.check for c in classes}) == len(classes)
    assert [c.check for c in classes if c.check not in ATTESTATION_CHECKS] == []


@pytest.mark.parametrize("doc", [b"", b"{}", b"[1]", b"\xff", b'{"v":1}', b"x" * 70000])
def test_malformed_quote_documents(doc: bytes) -> None:
    with pytest.raises(MalformedQuoteError):
        Quote.from_json(doc)


def test_well_known_root_is_the_same_everywhere_and_self_signed() -> None:
    root = SimulatedVendor.well_known().certificate
    assert root.issued_by(root)
    parsed = x509.load_der_x509_certificate(root.der())  # read independently of hazmat
    assert parsed.issuer == parsed.subject
    parsed.verify_directly_issued_by(parsed)
    assert SimulatedVendor.well_known().certificate == root
    assert report_data(nonce=b"n", enclave_public_key=b"k", transcript_head=b"h") == \
        hashlib.sha512(b"nkh").hexdigest()


# -- measurement and sealing ----------------------------------------------------------

def _copy_code(tmp_path: Path) -> Path:
    for rel in ENCLAVE_FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CODE_ROOT / rel, tmp_path / rel)
    return tmp_path


def test_measurement_is_sha384_of_the_canonical_manifest(tmp_path: Path) -> None:
    m = manifest(config=CONFIG)
    assert [f["path"] for f in m["files"]] == list(ENCLAVE_FILES)
    assert m["files"][0]["sha384"] == hashlib.sha384((CODE_ROOT / ENCLAVE_FILES[0]).read_bytes()).hexdigest()
    from protocols.messages import canonical_json

    assert measure(config=CONFIG) == hashlib.sha384(
        b"securediff/tee/measurement/v1\n" + canonical_json(m)).hexdigest()
    assert measure(config=CONFIG, root=_copy_code(tmp_path)) == measure(config=CONFIG)
    assert measure(config=enclave_config(min_survivors=3)) != measure(config=CONFIG)


def test_changed_code_changes_the_measurement_and_cannot_unseal(tmp_path: Path, platform) -> None:
    root = _copy_code(tmp_path)
    before = measure(config=CONFIG, root=root)
    sealed = Sealer(platform.sealing_key(before)).seal(b"state", label=b"x", random_bytes=os.urandom)
    target = root / "protocols/tee/enclave.py"
    target.write_bytes(target.read_bytes() + b"\n# exfiltrate()\n")
    after = measure(config=CONFIG, root=root)
    assert after != before
    with pytest.raises(UnsealError):
        Sealer(platform.sealing_key(after)).unseal(sealed, label=b"x")
    assert Sealer(platform.sealing_key(before)).unseal(sealed, label=b"x") == b"state"
    with pytest.raises(UnsealError):  # same code, another platform
        Sealer(SimulatedPlatform.create().sealing_key(before)).unseal(sealed, label=b"x")
    with pytest.raises(UnsealError):  # a blob sealed for another use
        Sealer(platform.sealing_key(before)).unseal(sealed, label=b"y")
