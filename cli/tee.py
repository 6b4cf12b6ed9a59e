"""`securediff tee ...`: measure the enclave aggregator, make and verify (SIMULATED) quotes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_USAGE,
    JsonFlag,
    console,
    fail,
    handle_errors,
    print_json,
)

tee_app = typer.Typer(
    help="The SIMULATED trusted execution environment: measurement and attestation quotes.",
    no_args_is_help=True,
    add_completion=False,
)

MinSurvivorsOpt = Annotated[
    int, typer.Option("--min-survivors", min=1, help="The enclave's release threshold (measured).")
]


def _hex(value: str | None, what: str) -> bytes | None:
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        fail(f"{what} must be hex", EXIT_USAGE)


@tee_app.command("measure")
def measure_cmd(min_survivors: MinSurvivorsOpt = 2, json_output: JsonFlag = False) -> None:
    """Print the measurement (SHA-384 of the code manifest and config) of the enclave
    aggregator in this installation."""
    from protocols.tee.measurement import enclave_config, manifest, measure

    with handle_errors():
        config = enclave_config(min_survivors=min_survivors)
        value = measure(config=config)
        files = manifest(config=config)["files"]
    if json_output:
        print_json({"measurement": value, "config": config, "files": files})
    else:
        console.print(value, highlight=False, soft_wrap=True)


@tee_app.command("quote")
def quote_cmd(
    out: Annotated[Path, typer.Option("--out", help="Where to write the quote (JSON).")],
    nonce: Annotated[str | None, typer.Option(help="Verifier nonce, hex (default: 32 random bytes).")] = None,
    transcript_head: Annotated[str | None, typer.Option(help="Transcript head, hex (default: zeros).")] = None,
    svn: Annotated[int, typer.Option(min=0, help="The enclave's security version.")] = 1,
    debug: Annotated[bool, typer.Option("--debug", help="Quote from a debug-mode enclave.")] = False,
    min_survivors: MinSurvivorsOpt = 2,
    json_output: JsonFlag = False,
) -> None:
    """Make a quote from a SIMULATED enclave running this installation's aggregator
    on a fresh simulated platform (for trying `tee verify`; proves nothing)."""
    from protocols.tee import SIMULATED_NOTICE
    from protocols.tee.enclave import SimulatedEnclave
    from protocols.tee.measurement import enclave_config, measure
    from protocols.tee.vendor import SimulatedPlatform

    challenge = _hex(nonce, "--nonce") if nonce is not None else os.urandom(32)
    head = _hex(transcript_head, "--transcript-head") if transcript_head is not None else bytes(32)
    with handle_errors():
        measurement = measure(config=enclave_config(min_survivors=min_survivors))
        enclave = SimulatedEnclave(platform=SimulatedPlatform.create(), measurement=measurement,
                                   min_survivors=min_survivors, svn=svn, debug=debug)
        quote = enclave.quote(enclave.start(random_bytes=os.urandom), nonce=challenge,
                              transcript_head=head)
    out.write_bytes(quote.to_json() + b"\n")
    if json_output:
        print_json({"path": str(out), "measurement": measurement, "nonce": challenge.hex(),
                    "enclave_public_key": quote.evidence.enclave_public_key.hex(),
                    "notice": SIMULATED_NOTICE})
    else:
        console.print(f"wrote a SIMULATED quote to {out} (measurement {measurement[:16]}...)",
                      highlight=False, soft_wrap=True)
        _print_notice()


@tee_app.command("verify")
def verify_cmd(
    quote_path: Annotated[Path, typer.Argument(metavar="QUOTE", help="A quote file (JSON).")],
    allow: Annotated[list[str], typer.Option("--allow", help="An allowed measurement (repeatable).")],
    min_svn: Annotated[int, typer.Option(min=0, help="Lowest acceptable security version.")] = 1,
    nonce: Annotated[str | None, typer.Option(help="The nonce you issued, hex.")] = None,
    enclave_key: Annotated[str | None, typer.Option(help="The enclave key you will use, hex.")] = None,
    transcript_head: Annotated[str | None, typer.Option(help="The expected transcript head, hex.")] = None,
    replay_cache: Annotated[Path | None, typer.Option(help="JSON file of accepted nonces (updated).")] = None,
    root: Annotated[Path | None, typer.Option(
        help="Trusted vendor root, PEM (default: the simulation's public one). Any other root "
             "refuses quotes issued under the simulated root.")] = None,
    production: Annotated[bool, typer.Option("--production", help="Refuse simulated quotes.")] = False,
    allow_debug: Annotated[bool, typer.Option("--allow-debug", help="Accept debug enclaves.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Verify a quote: simulated root, chain, signature, measurement, debug, svn, nonce,
    key binding. Exit 0 verified, 1 a check failed (named), 2 bad usage."""
    from protocols.tee import SIMULATED_NOTICE
    from protocols.tee.errors import AttestationError
    from protocols.tee.quote import Quote
    from protocols.tee.verify import (
        AttestationPolicy,
        ReplayCache,
        is_simulated_root,
        load_root,
        root_fingerprint,
        verify_quote,
    )

    expected = {"nonce": _hex(nonce, "--nonce"), "enclave_public_key": _hex(enclave_key, "--enclave-key"),
                "transcript_head": _hex(transcript_head, "--transcript-head")}
    try:
        raw = quote_path.read_bytes()
        trusted = load_root(root.read_bytes()) if root is not None else None
        seen = _read_cache(replay_cache)
    except (OSError, ValueError) as exc:
        fail(f"cannot read input: {exc}", EXIT_USAGE)
    policy_args = {"allowed_measurements": tuple(m.lower() for m in allow), "min_svn": min_svn,
                   "allow_debug": allow_debug, "production": production}
    if trusted is not None:
        policy_args["trusted_root"] = trusted
    cache = ReplayCache(seen=seen) if replay_cache is not None else None
    policy = AttestationPolicy(**policy_args)
    report: dict = {"ok": True, "check": None, "error": None, "quote": None,
                    "root_sha256": root_fingerprint(policy.trusted_root),
                    "root_simulated": is_simulated_root(policy.trusted_root),
                    "notice": SIMULATED_NOTICE}
    with handle_errors():
        try:
            quote = Quote.from_json(raw.strip())
            report["quote"] = quote.to_dict()["body"]
            verify_quote(quote=quote, policy=policy, nonce=expected["nonce"],
                         enclave_public_key=expected["enclave_public_key"],
                         transcript_head=expected["transcript_head"], replay_cache=cache)
        except AttestationError as exc:
            report.update(ok=False, check=exc.check, error=str(exc))
    if cache is not None and report["ok"] and replay_cache is not None:
        replay_cache.write_text(json.dumps({"v": 1, "nonces": [n.hex() for n in cache.nonces()]}) + "\n")
    print_json(report) if json_output else _print_verdict(report)
    if not report["ok"]:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _print_verdict(report: dict) -> None:
    if report["ok"]:
        body = report["quote"]
        # Under the public root a quote is simulated whatever its own flag claims.
        kind = "SIMULATED quote" if body["simulated"] or report["root_simulated"] else "quote"
        console.print(f"[bold green]verified[/] {kind}: measurement {body['measurement'][:16]}..., "
                      f"svn {body['svn']}, platform {body['platform_id']}", highlight=False, soft_wrap=True)
    else:
        console.print(f"[bold red]rejected[/] ({report['check']}): {report['error']}", highlight=False, soft_wrap=True)
    root = "the public simulated root" if report["root_simulated"] else "a configured root"
    console.print(f"trusted root: {root} (SHA-256 {report['root_sha256'][:16]}...)",
                  highlight=False, soft_wrap=True)
    _print_notice()


def _print_notice() -> None:
    from protocols.tee import SIMULATED_NOTICE

    console.print(f"[bold yellow]{SIMULATED_NOTICE}[/]", highlight=False, soft_wrap=True)


def _read_cache(path: Path | None) -> list[bytes]:
    if path is None or not path.exists():
        return []
    obj = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(obj, dict) or obj.get("v") != 1 or not isinstance(obj.get("nonces"), list):
        raise ValueError(f"{path} is not a replay cache")
    return [bytes.fromhex(n) for n in obj["nonces"]]
