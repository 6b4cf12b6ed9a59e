"""`securediff tee measure | quote | verify` through Typer's CliRunner: every
attestation failure class is refused from the command line with its check named."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.tee import tee_app
from protocols.tee import (
    SIMULATED_NOTICE,
    SimulatedPlatform,
    SimulatedVendor,
    enclave_config,
    measure,
    root_fingerprint,
)
from protocols.tee.enclave import SimulatedEnclave

runner = CliRunner()
NONCE = os.urandom(32)
HEAD = bytes(32)


@pytest.fixture(scope="module")
def measurement() -> str:
    return measure(config=enclave_config(min_survivors=2))


def _write(tmp_path: Path, quote, name="q.json") -> Path:
    path = tmp_path / name
    path.write_bytes(quote.to_json())
    return path


def _make(measurement, *, platform=None, **kw):
    enclave = SimulatedEnclave(platform=platform or SimulatedPlatform.create(),
                               measurement=measurement, min_survivors=2, **kw)
    sealed = enclave.start(random_bytes=os.urandom)
    return enclave.quote(sealed, nonce=NONCE, transcript_head=HEAD), enclave.public_key(sealed)


def _verify(path: Path, measurement: str, *extra: str):
    result = runner.invoke(tee_app, ["verify", str(path), "--allow", measurement, "--json", *extra])
    return result.exit_code, (json.loads(result.stdout) if result.stdout.strip() else None)


def test_measure_prints_the_current_measurement(measurement) -> None:
    result = runner.invoke(tee_app, ["measure", "--json"])
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out["measurement"] == measurement and out["config"] == {"protocol": "tee", "min_survivors": 2}
    plain = runner.invoke(tee_app, ["measure", "--min-survivors", "3"])
    assert plain.stdout.strip() == measure(config=enclave_config(min_survivors=3))


def test_quote_then_verify(tmp_path: Path, measurement) -> None:
    path = tmp_path / "q.json"
    made = runner.invoke(tee_app, ["quote", "--out", str(path), "--nonce", NONCE.hex(), "--json"])
    assert made.exit_code == 0
    key = json.loads(made.stdout)["enclave_public_key"]
    code, report = _verify(path, measurement, "--nonce", NONCE.hex(), "--enclave-key", key,
                           "--transcript-head", HEAD.hex())
    assert code == 0 and report["ok"] and report["quote"]["simulated"] is True
    assert report["notice"] == SIMULATED_NOTICE and report["root_simulated"] is True
    assert json.loads(made.stdout)["notice"] == SIMULATED_NOTICE
    text = runner.invoke(tee_app, ["verify", str(path), "--allow", measurement])
    assert text.exit_code == 0 and "verified" in text.stdout and SIMULATED_NOTICE in text.stdout
    assert "public simulated root" in text.stdout
    written = runner.invoke(tee_app, ["quote", "--out", str(tmp_path / "q2.json")])
    assert written.exit_code == 0 and SIMULATED_NOTICE in written.stdout


@pytest.mark.parametrize(
    ("defect", "extra", "check"),
    [
        ("measurement", (), "measurement"),
        ("debug", (), "debug"),
        ("svn", ("--min-svn", "2"), "svn"),
        ("signature", (), "signature"),
        ("chain", (), "chain"),
        ("nonce", ("--nonce", "00" * 32), "nonce"),
        ("key", (), "key_binding"),
        ("production", ("--production",), "production"),
    ],
)
def test_each_failure_class_is_named(tmp_path, measurement, defect, extra, check) -> None:
    platform = None
    kw: dict = {}
    if defect == "debug":
        kw["debug"] = True
    if defect == "chain":
        platform = SimulatedPlatform.create(vendor=SimulatedVendor.generate(name="rogue"))
    quote, key = _make(measurement, platform=platform, **kw)
    if defect == "signature":
        quote = dataclasses.replace(quote, body=dataclasses.replace(quote.body, svn=7))
    allowed = "0" * 96 if defect == "measurement" else measurement
    args = list(extra)
    if defect == "key":
        args += ["--enclave-key", os.urandom(32).hex()]
    code, report = _verify(_write(tmp_path, quote), allowed, *args)
    assert code == 1 and report["ok"] is False and report["check"] == check


def test_replayed_nonce_through_the_cache_file(tmp_path: Path, measurement) -> None:
    quote, _ = _make(measurement)
    path, cache = _write(tmp_path, quote), tmp_path / "seen.json"
    assert _verify(path, measurement, "--replay-cache", str(cache))[0] == 0
    assert json.loads(cache.read_text())["nonces"] == [NONCE.hex()]
    code, report = _verify(path, measurement, "--replay-cache", str(cache))
    assert code == 1 and report["check"] == "nonce"


def test_another_trusted_root_from_a_pem_file(tmp_path: Path, measurement) -> None:
    rogue = SimulatedVendor.generate(name="rogue")
    quote, _ = _make(measurement, platform=SimulatedPlatform.create(vendor=rogue))
    pem = tmp_path / "root.pem"
    pem.write_bytes(rogue.certificate.pem())
    assert _verify(_write(tmp_path, quote), measurement, "--root", str(pem))[0] == 0


def test_a_real_root_refuses_the_simulated_root_with_the_notice(tmp_path: Path, measurement) -> None:
    """The same quote that the default (public) root accepts."""
    real = SimulatedVendor.generate(name="a real vendor root (test)")
    pem = tmp_path / "root.pem"
    pem.write_bytes(real.certificate.pem())
    path = _write(tmp_path, _make(measurement)[0])
    assert _verify(path, measurement)[0] == 0
    code, report = _verify(path, measurement, "--root", str(pem))
    assert code == 1 and report["check"] == "simulated_root" and report["root_simulated"] is False
    assert report["root_sha256"] == root_fingerprint(real.certificate)
    assert report["notice"] == SIMULATED_NOTICE
    text = runner.invoke(tee_app, ["verify", str(path), "--allow", measurement, "--root", str(pem)])
    assert text.exit_code == 1 and "rejected (simulated_root)" in text.stdout
    assert SIMULATED_NOTICE in text.stdout


def test_bad_input_and_usage(tmp_path: Path, measurement) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    code, report = _verify(junk, measurement)
    assert code == 1 and report["check"] == "format"
    assert _verify(tmp_path / "missing.json", measurement)[0] == 2
    quote, _ = _make(measurement)
    assert _verify(_write(tmp_path, quote), measurement, "--nonce", "zz")[0] == 2
    text = runner.invoke(tee_app, ["verify", str(_write(tmp_path, quote)), "--allow", "0" * 96])
    assert text.exit_code == 1 and "measurement" in text.stdout
