"""The aggregator of a Flower run: settings, greeting, rounds, results.

Writes into `run-dir`: `roster.json` (the pinned keys), `transcript.jsonl` (the
same format as an in-process run; `securediff transcript verify RUN-DIR`),
`flower.json` (per round: survivors, dropped with reasons, contributors, total
weight, seconds) and `aggregates.safetensors` (each released weighted sum).

With `inputs = "train"` (the default) the nodes train on their own data and the
aggregator holds the shared model (`shared_model.py`); it also writes
`config.toml` (the securediff config the nodes were sent) and
`shared-model.safetensors` after each round; at the end of the run,
`flower-manifest.json` (manifest.py) pins the final shared model. With `inputs = "test-vectors"` the
nodes aggregate the insecure deterministic test mode's vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from protocols.engine import close_aborted
from protocols.errors import ProtocolAbort, ProtocolError, ProtocolInputError
from protocols.hazmat.keyfile import read_key_file
from protocols.hazmat.signing import verify_signature
from protocols.registry import make_protocol
from protocols.remote import PartyIdentities, SignedRecordWriter
from protocols.roster import load_rosters, save_roster
from protocols.stages import VectorSpec
from securediff.config import from_dict, load_toml
from securediff.errors import ConfigError, RunDirectoryError
from securediff.flower.apps import GridExchange, wait_for_nodes, write_json
from securediff.flower.driver import run_remote_round
from securediff.flower.exchange import HELLO_DOMAIN, installed_version
from securediff.flower.manifest import write_manifest
from securediff.flower.node import stream
from securediff.flower.shared_model import SharedModelServer
from securediff.rng import RandomSource

INPUT_SOURCES = ("train", "test-vectors")


@dataclass(frozen=True)
class AggregatorSettings:
    run_dir: Path
    roster: Path
    aggregator_key: Path
    protocol: str
    protocol_params: dict[str, Any]
    rounds: int
    vector_length: int
    min_nodes: int
    stage_timeout: float
    connect_timeout: float
    insecure_seed: int | None
    store_payloads: bool
    inputs: str = "train"
    config: Path | None = None  # the securediff config TOML (train); None: defaults
    train_timeout: float = 600.0  # seconds for the nodes' local training (train)

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> AggregatorSettings:
        def need(key: str) -> Any:
            if key not in cfg or cfg[key] in ("", None):
                raise ConfigError(f"run config {key!r} is required (flwr run --run-config)")
            return cfg[key]

        inputs = str(cfg.get("inputs", "train"))
        if inputs not in INPUT_SOURCES:
            raise ConfigError(f"run config 'inputs' must be one of {INPUT_SOURCES}")
        try:
            params = json.loads(cfg.get("protocol-params", "{}") or "{}")
        except ValueError:
            raise ConfigError("run config 'protocol-params' must be a JSON object") from None
        seed = int(cfg.get("insecure-seed", -1))
        settings = cls(
            run_dir=Path(need("run-dir")), roster=Path(need("roster")),
            aggregator_key=Path(need("aggregator-key")), protocol=str(need("protocol")),
            protocol_params=params, rounds=int(need("rounds")),
            vector_length=int(need("vector-length")) if inputs == "test-vectors" else 1,
            min_nodes=int(need("min-nodes")),
            stage_timeout=float(need("stage-timeout")),
            connect_timeout=float(cfg.get("connect-timeout", 120.0)),
            insecure_seed=None if seed < 0 else seed,
            store_payloads=bool(cfg.get("store-payloads", False)),
            inputs=inputs, config=Path(str(cfg["config"])) if cfg.get("config") else None,
            train_timeout=float(cfg.get("train-timeout", 600.0)),
        )
        if settings.rounds < 1 or settings.vector_length < 1 or settings.min_nodes < 1:
            raise ConfigError("rounds, vector-length and min-nodes must be >= 1")
        if settings.stage_timeout <= 0 or settings.train_timeout <= 0:
            raise ConfigError("stage-timeout and train-timeout must be > 0 seconds")
        if not isinstance(params, dict):
            raise ConfigError("run config 'protocol-params' must be a JSON object")
        return settings


def greet(exchange: GridExchange, roster_ids: tuple[str, ...], roster
          ) -> tuple[dict[str, int], list[str]]:
    """Map each node to the roster client whose key it proves to hold; and the
    reasons the nodes that refused gave (another securediff version, say)."""
    nonce = os.urandom(32)
    replies = exchange.to_nodes({n: {"kind": "hello", "nonce": nonce, "securediff": installed_version()}
                                 for n in exchange.node_ids()}, "hello")
    nodes: dict[str, int] = {}
    refusals = sorted({str(r["error"]) for r in replies.values() if "error" in r})
    for node, reply in sorted(replies.items()):
        cid = reply.get("client_id")
        sig = reply.get("sig")
        if (
            isinstance(cid, str) and cid in roster_ids and cid not in nodes
            and isinstance(sig, bytes)
            and verify_signature(public_key=roster.public_key(cid),
                                 message=HELLO_DOMAIN + nonce + cid.encode(), signature=sig)
        ):
            nodes[cid] = node
    return nodes, refusals


def run_aggregator(settings: AggregatorSettings, exchange: GridExchange) -> dict[str, Any]:
    run_dir = settings.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "transcript.jsonl").exists():
        raise RunDirectoryError(f"{run_dir} already holds a transcript")
    roster = load_rosters(settings.roster)[-1]
    me = PartyIdentities(roster, party=roster.aggregator_id,
                         key=read_key_file(settings.aggregator_key))
    protocol = make_protocol(settings.protocol, **settings.protocol_params).bind(me)
    save_roster(run_dir / "roster.json", roster)
    started = time.perf_counter()
    wait_for_nodes(exchange, settings.min_nodes, settings.connect_timeout)
    exchange.nodes, refusals = greet(exchange, roster.client_ids, roster)
    if len(exchange.nodes) < settings.min_nodes:
        said = f"; refused: {' | '.join(refusals[:3])}" if refusals else ""
        raise ProtocolError(f"only {len(exchange.nodes)} SuperNodes proved a roster key, "
                            f"{settings.min_nodes} needed{said}")
    clients = sorted(exchange.nodes)
    rb = (os.urandom if settings.insecure_seed is None else stream(hashlib.sha256(
        f"securediff/flower/aggregator/{settings.insecure_seed}".encode()).digest()))
    model = None
    if settings.inputs == "train":
        model = shared_model_server(settings, exchange)
        (run_dir / "config.toml").write_text(model.config_text, encoding="utf-8")
        clients = model.describe(clients)
    rounds, aggregates = [], {}
    # Names the run in every signed key advert (a node's advert of one run does not
    # verify in another); the shared model's id when training, else a fresh one.
    run_id = model.run_id if model is not None else os.urandom(8).hex()
    transcript = SignedRecordWriter.open(
        run_dir / "transcript.jsonl", identities=me, protocol=protocol,
        store_payloads=settings.store_payloads, planned_rounds=(0, settings.rounds))
    try:
        for r in range(settings.rounds):
            t0 = time.perf_counter()
            exchange.timings.clear()
            participants, length, log = clients, settings.vector_length, {}
            round_exchange = exchange
            if model is not None:
                # The sampled nodes are the participants; the training rides with the
                # round's first protocol request, and a node whose training fails is
                # dropped there, before any mask depends on it.
                participants = model.select(r, clients)
                round_exchange = model.round_exchange(r, clients, participants)
                length = model.length
                log = {"selected": participants}
            try:
                try:
                    res = run_remote_round(
                        protocol, round_index=r, participants=participants,
                        vector_spec=VectorSpec(length, "float32"), identities=me,
                        transcript=transcript, exchange=round_exchange, random_bytes=rb,
                        binding=f"flower run {run_id}, session {transcript.session}")
                except ProtocolInputError as exc:
                    # Too few sampled nodes for the protocol (secagg needs 3): the round is
                    # closed as aborted before any message, and nothing is released.
                    close_aborted(transcript, r, participants, str(exc))
                    raise ProtocolAbort(str(exc)) from None
                finally:
                    if model is not None:
                        log.update(round_exchange.finish())
            except ProtocolAbort as exc:
                rounds.append({"round": r, "outcome": "aborted", "reason": str(exc),
                               "seconds": time.perf_counter() - t0,
                               "exchange_seconds": _timings(exchange), **log})
                continue
            aggregates[f"round-{r}"] = np.ascontiguousarray(res.weighted_sum, dtype=np.float64)
            if model is not None:
                model.apply(res)
                log["shared_model_sha256"] = model.save(run_dir / "shared-model.safetensors", r)
            rounds.append({
                "round": r, "outcome": "aggregated", "survivors": list(res.survivors),
                "dropped": res.stats["drop_reasons"], "contributors": list(res.contributors),
                "total_weight": res.total_weight, "bytes_up": res.bytes_up,
                "bytes_down": res.bytes_down, "seconds": time.perf_counter() - t0,
                "exchange_seconds": _timings(exchange), **log,
            })
    finally:
        transcript.close()
    if aggregates:
        save_file(aggregates, str(run_dir / "aggregates.safetensors"))
    private = settings.insecure_seed is None and (
        model is None or all(model.private_nodes.values()))
    summary = {
        "mode": "private" if private else "NOT PRIVATE: insecure deterministic test mode",
        "inputs": settings.inputs, "protocol": protocol.name, "clients": exchange.nodes,
        "rounds": rounds, "seconds": time.perf_counter() - started,
    }
    if model is not None:
        summary["run_id"] = model.run_id
    write_json(run_dir / "flower.json", summary)
    # Last: a manifest exists only for a run that ended, and pins what it released.
    write_manifest(run_dir, run_id=summary.get("run_id"), protocol=protocol.name,
                   mode=summary["mode"], rounds=rounds, planned_rounds=settings.rounds)
    return summary


def shared_model_server(settings: AggregatorSettings, exchange: GridExchange) -> SharedModelServer:
    """The securediff config of a training run, fitted to the run config (rounds,
    protocol, insecure seed), and the shared model that goes with it."""
    raw = load_toml(settings.config) if settings.config is not None else {}
    config = from_dict(raw).replace(
        federation={"rounds": settings.rounds, "protocol": settings.protocol},
        run={"insecure_seed": settings.insecure_seed})
    source = (RandomSource.from_os() if settings.insecure_seed is None
              else RandomSource.insecure_from_seed(settings.insecure_seed))
    return SharedModelServer(config, exchange=exchange, source=source,
                             train_timeout=settings.train_timeout)


def _timings(exchange: GridExchange) -> list[list[Any]]:
    """[stage or request kind, seconds] per exchange of the round, in order."""
    return [[name, round(seconds, 3)] for name, seconds in exchange.timings]
