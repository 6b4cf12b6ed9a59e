"""`securediff flower ...`: set up and start a run across machines on Flower."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from cli.common import EXIT_USAGE, JsonFlag, console, fail, handle_errors, print_json

flower_app = typer.Typer(help="Run across machines on Flower: keys, roster, SuperNodes, "
                         "final models.",
                         no_args_is_help=True)


@contextmanager
def _usage_errors() -> Iterator[None]:
    """keygen and roster fail only on what they were given (a party id, an existing
    key, a missing .pub file): bad usage, exit 2."""
    from protocols.errors import RosterError

    try:
        yield
    except RosterError as exc:
        fail(str(exc), EXIT_USAGE)


@flower_app.command("keygen")
def keygen_cmd(
    parties: Annotated[list[str], typer.Argument(help="Party ids, e.g. client-03 or aggregator.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for PARTY.key and PARTY.pub.")],
    as_json: JsonFlag = False,
) -> None:
    """Make identity keys on this machine. PARTY.key stays here; send PARTY.pub to the set-up."""
    from securediff.flower.keys import keygen

    with handle_errors(), _usage_errors():
        written = keygen(parties, out)
    if as_json:
        print_json({"files": [str(p) for p in written]})
    else:
        for path in written:
            console.print(str(path))


@flower_app.command("roster")
def roster_cmd(
    pub_files: Annotated[list[Path], typer.Argument(help="PARTY.pub files of every party.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write roster.json.")],
    aggregator: Annotated[str, typer.Option("--aggregator", help="The aggregator's id.")] = (
        "aggregator"),
    as_json: JsonFlag = False,
) -> None:
    """Pin every party's public key in a roster; give it to every party out of band."""
    from securediff.flower.keys import make_roster

    with handle_errors(), _usage_errors():
        roster = make_roster(pub_files, aggregator=aggregator, out=out)
    if as_json:
        print_json({"roster": str(out), "digest": roster.digest, "parties": dict(roster.keys)})
    else:
        console.print(f"{out}: {len(roster.client_ids)} clients, digest {roster.digest}")


def _check_paths(**paths: Path | None) -> None:
    """Every file the node will read exists and is readable, before anything starts
    (a dry run included): the SuperNode would otherwise fail at its first message."""
    from securediff.errors import ConfigError

    for name, path in paths.items():
        if path is None:
            continue
        flag = "--" + name.replace("_", "-")
        if not path.exists():
            raise ConfigError(f"{flag} {path} does not exist")
        if path.is_file() and not os.access(path, os.R_OK):
            raise ConfigError(f"{flag} {path} is not readable")
        if name != "data_path" and not path.is_file():
            raise ConfigError(f"{flag} {path} is not a file")


@flower_app.command("supernode")
def supernode_cmd(
    client_id: Annotated[str, typer.Option("--client-id", help="This node's id in the roster.")],
    identity_key: Annotated[Path, typer.Option("--identity-key", help="This party's .key file.")],
    roster: Annotated[Path, typer.Option("--roster", help="The pinned roster.json.")],
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink host:port.")],
    port: Annotated[int, typer.Option("--port", help="Local port of the node's runtime API.")
                    ] = 9094,
    root_certificates: Annotated[
        Path | None, typer.Option("--root-certificates", help="CA certificate of the SuperLink "
                                  "(TLS). Without it the connection is --insecure.")] = None,
    auth_key: Annotated[
        Path | None, typer.Option("--auth-key", help="SuperNode authentication key (needs TLS).")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Node-local directory for this node's "
                                  "ledger, noised data and personal model (training runs).")
    ] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="digits, colored-digits, mnist-idx, "
                                         "fashion-mnist-idx or medmnist-npz.")] = "digits",
    data_path: Annotated[
        Path | None, typer.Option("--data-path", help="This organisation's data: an MNIST-format "
                                  "IDX directory or a MedMNIST .npz file.")] = None,
    partition_id: Annotated[int, typer.Option("--partition-id", help="This node's share of the "
                                              "dataset (0-based).")] = 0,
    num_partitions: Annotated[int, typer.Option("--num-partitions", help="How many shares the "
                                                "dataset is cut into (1: all of it).")] = 1,
    max_epsilon: Annotated[float, typer.Option("--max-epsilon", help="Refuse runs whose forward "
                                               "noise costs more per record.")] = 10.0,
    test_vectors: Annotated[bool, typer.Option("--test-vectors", help="Only aggregate the "
                                               "insecure test mode's vectors (no training, "
                                               "NOT PRIVATE).")] = False,
    protocols: Annotated[str | None, typer.Option("--protocols", help="Comma-separated "
                                                  "protocols this node takes part in "
                                                  "(default: all), e.g. secagg,ckks,tee.")] = None,
    tee_allow: Annotated[str | None, typer.Option("--tee-allow", help="Comma-separated enclave "
                                                  "measurements this node accepts (default: "
                                                  "the one of its own code).")] = None,
    tee_root: Annotated[Path | None, typer.Option(
        "--tee-root", help="PEM file of the attestation root this node trusts for tee rounds "
        "(default: the public simulated root, which proves nothing against the aggregator's "
        "operator); under a real root the simulated enclave is refused.")] = None,
    threat_model: Annotated[str | None, typer.Option(
        "--threat-model", help="The aggregator this node assumes: active (default; refuses "
        "ckks) or honest-but-curious.")] = None,
    collusion_fraction: Annotated[float | None, typer.Option(
        "--collusion-fraction", help="Fraction of clients this node assumes collude with the "
        "aggregator (default 0); secagg's degree and threshold must meet the analysis' plan "
        "under it, and ckks is refused above 0.")] = None,
    secagg_security_bits: Annotated[int | None, typer.Option(
        "--secagg-security-bits", help="Security level of that plan (default 40).")] = None,
    min_contributors: Annotated[int | None, typer.Option(
        "--min-contributors", help="Refuse secagg rounds whose min_contributors is lower "
        "(default 0).")] = None,
    allow_no_consistency_check: Annotated[bool, typer.Option(
        "--allow-no-consistency-check", help="Take part in secagg rounds without the "
        "consistency round (needs --threat-model honest-but-curious).")] = False,
    min_survivors: Annotated[int | None, typer.Option(
        "--min-survivors", help="ckks and tee never release a sum of fewer clients (default 2).")
    ] = None,
    ckks_min_flood_bits: Annotated[int | None, typer.Option(
        "--ckks-min-flood-bits", help="Refuse ckks rounds whose flooding noise is weaker "
        "(default 40).")] = None,
    tee_min_svn: Annotated[int | None, typer.Option(
        "--tee-min-svn", help="Lowest enclave security version accepted (default 1).")] = None,
    tee_production: Annotated[bool, typer.Option(
        "--tee-production", help="Accept only production (non-debug) enclaves.")] = False,
    allow_insecure_seed: Annotated[bool, typer.Option(
        "--allow-insecure-seed", help="Let a run's insecure test seed drive this node's noise "
        "(its results are then NOT PRIVATE).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check every path and setting and "
                                          "print the command; write nothing (the roster is "
                                          "not kept).")] = False,
) -> None:
    """Start this organisation's flower-supernode with its node config: by default a
    training node on its own data (--state-dir required). With --state-dir the node
    keeps the roster it is given as STATE-DIR/roster.json and prints its SHA-256."""
    from securediff.errors import ConfigError
    from securediff.flower.keys import supernode_command
    from securediff.flower.node import keep_roster
    from securediff.flower.policy import NodePolicy
    from securediff.locks import DirectoryLock

    extra: dict[str, str | int | float] = {}
    with handle_errors():
        if not test_vectors:
            if state_dir is None:
                raise ConfigError("--state-dir is required for a training node "
                                  "(or --test-vectors)")
            if dataset in ("mnist-idx", "fashion-mnist-idx", "medmnist-npz") and data_path is None:
                raise ConfigError(f"--data-path is required for --dataset {dataset}")
            if not 0 <= partition_id < num_partitions:
                raise ConfigError("--partition-id must be in [0, --num-partitions)")
            extra = {"state-dir": str(state_dir.resolve()), "dataset": dataset,
                     "partition-id": partition_id, "num-partitions": num_partitions,
                     "max-epsilon": max_epsilon}
            if data_path is not None:
                extra["data-path"] = str(data_path.resolve())
        # The node's own protocol policy (securediff/flower/policy.py), checked here
        # so that a bad setting stops the start rather than every round.
        policy: dict[str, str | int | float | None] = {
            "protocols": protocols, "tee-allow": tee_allow,
            "tee-root": str(tee_root.resolve()) if tee_root is not None else None,
            "threat-model": threat_model,
            "collusion-fraction": collusion_fraction,
            "secagg-security-bits": secagg_security_bits, "min-contributors": min_contributors,
            "allow-no-consistency-check": allow_no_consistency_check or None,
            "min-survivors": min_survivors, "ckks-min-flood-bits": ckks_min_flood_bits,
            "tee-min-svn": tee_min_svn, "tee-production": tee_production or None,
            "allow-insecure-seed": allow_insecure_seed or None}
        extra.update({k: v for k, v in policy.items() if v is not None and v != ""})
        _check_paths(identity_key=identity_key, roster=roster, data_path=data_path,
                     root_certificates=root_certificates, auth_key=auth_key, tee_root=tee_root)
        NodePolicy.from_node_config(extra)
        roster_path = roster.resolve()
        if state_dir is not None:
            roster_path = state_dir.resolve() / "roster.json"
            if not dry_run:
                # One SuperNode per state directory for its whole life: the lock's file
                # descriptor survives the exec below, and the kernel drops it when the
                # SuperNode exits (Flower's per-message processes share its state dir).
                state_dir.mkdir(parents=True, exist_ok=True)
                DirectoryLock.acquire(state_dir, what="node state directory", inheritable=True)
                kept = keep_roster(roster, state_dir)
                pins = " ".join(f"--roster-sha256 {d}" for d in kept.digests)
                console.print(f"roster kept at {kept.path} (file SHA-256 {kept.sha256}); a "
                              f"reviewer pins it with: securediff transcript verify RUN-DIR "
                              f"{pins}", highlight=False, soft_wrap=True)
        cmd = supernode_command(
            client_id=client_id, identity_key=str(identity_key.resolve()),
            roster=str(roster_path), superlink=superlink, port=port,
            root_certificates=None if root_certificates is None else str(root_certificates),
            auth_key=None if auth_key is None else str(auth_key), extra=extra)
    if dry_run:
        print(shlex.join(cmd))
        return
    os.execvp(cmd[0], cmd)  # noqa: S606 (the user's own command, by design)


ManifestOpt = Annotated[Path, typer.Option(
    "--manifest", help="The run's flower-manifest.json (or the aggregator's run directory).")]
SharedOpt = Annotated[Path, typer.Option(
    "--shared", help="The run's shared-model.safetensors; refused unless the manifest pins it.")]
PersonalOpt = Annotated[Path, typer.Option(
    "--personal", help="This node's STATE-DIR/runs/RUN-ID/personal.safetensors (or that "
    "directory).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


@flower_app.command("sample")
def sample_cmd(
    manifest: ManifestOpt,
    shared: SharedOpt,
    personal: PersonalOpt,
    per_class: Annotated[int, typer.Option("--per-class", min=1)] = 8,
    out: Annotated[Path, typer.Option("--out", help="PNG to write (rows: classes).")] = Path(
        "samples.png"),
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """On a node: sample its final pipeline (the run's shared model, its personal model)
    and print the privacy statement of its artefacts."""
    from securediff.flower.final_models import node_statement, open_node_models, sample_node

    with handle_errors():
        models = open_node_models(manifest=manifest, shared=shared, node_run=personal,
                                  device=device)
        written = sample_node(models, per_class=per_class, out=out)
        statement = node_statement(models)
    if as_json:
        print_json({"samples": str(written), "run_id": models.manifest["run_id"],
                    "privacy_statement": statement})
        return
    from cli.render import statement_table

    console.print(f"samples written to [bold]{written}[/]")
    console.print(statement_table(statement))


@flower_app.command("evaluate")
def evaluate_cmd(
    manifest: ManifestOpt,
    shared: SharedOpt,
    personal: PersonalOpt,
    device: DeviceOpt = "auto",
    as_json: JsonFlag = False,
) -> None:
    """On a node: evaluate its final pipeline on the test split of the data it holds
    (the metrics of `securediff evaluate`)."""
    from securediff.flower.final_models import evaluate_node, open_node_models

    with handle_errors():
        models = open_node_models(manifest=manifest, shared=shared, node_run=personal,
                                  device=device)
        # The evaluator is trained on this node's data: its cache stays in the state-dir.
        result = evaluate_node(models, cache_dir=_state_dir(personal) / "cache")
    if as_json:
        print_json(result)
        return
    from cli.render import summary_table

    console.print(summary_table(result["clients"], result["summary"]))


def _state_dir(personal: Path) -> Path:
    """STATE-DIR, from STATE-DIR/runs/RUN-ID[/personal.safetensors]."""
    run_dir = personal.parent if personal.is_file() else personal
    return run_dir.parent.parent
