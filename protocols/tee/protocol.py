"""`tee`: the aggregator runs in a SIMULATED trusted execution environment.

A round:

1. RequestQuote (C)        each client sends a fresh 32-byte nonce.
2. Attest (S)              the enclave returns, per client, a quote whose report
                           data binds that nonce, the enclave's X25519 key for the
                           round and the client's transcript head.
3. SubmitSealed (C)        the client verifies the quote (root, chain, signature,
                           measurement allowlist, debug off, svn, nonce, key
                           binding; any failure aborts the round with its own
                           error) and sends its update sealed to the attested key.
4. BroadcastAggregate (S)  the enclave releases the weighted sum of the updates of
                           the clients still present, and nothing else.

The host's state holds only blobs sealed to (platform, measurement). Nothing
here is hardware: the platform and its vendor are software (protocols.tee.vendor)
and the simulated root key is public, so the guarantee is about the protocol's
logic, not about isolation; every quote says `simulated: true`.

`attestation_root` (PEM) is the vendor root the clients trust. Left unset it is
the public simulated root, and every output says SIMULATED_NOTICE. Set to any
other root (a real vendor's), quotes issued under the simulated root are refused
(`SimulatedRootError`), so this simulated enclave's rounds all abort.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.errors import ProtocolAbort, ProtocolInputError
from protocols.hazmat.certificates import Certificate
from protocols.hazmat.kex import PUBLIC_KEY_BYTES
from protocols.messages import Message, encode
from protocols.stages import (
    Aggregate,
    AggregationProtocol,
    ClientInput,
    ClientState,
    RandomBytes,
    RoundSetup,
    ServerState,
    StageSpec,
)
from protocols.tee.channel import agreement_key, channel_context, seal_to_enclave
from protocols.tee.enclave import SimulatedEnclave, encode_update, transcript_head
from protocols.tee.measurement import enclave_config, measure
from protocols.tee.messages import Attest, BroadcastAggregate, RequestQuote, SubmitSealed
from protocols.tee.notice import SIMULATED_NOTICE
from protocols.tee.quote import Quote
from protocols.tee.vendor import SimulatedPlatform
from protocols.tee.verify import (
    AttestationPolicy,
    ReplayCache,
    is_simulated_root,
    root_fingerprint,
    verify_quote,
)

NONCE_BYTES = 32
_HEX96 = set("0123456789abcdef")


@dataclass(frozen=True)
class _ServerData:
    random_bytes: RandomBytes
    sealed: bytes  # the enclave's state; the host cannot open it
    challenges: tuple[tuple[str, bytes, bytes], ...] = ()  # client, nonce, message bytes
    aggregate: Aggregate | None = None
    contributors: tuple[str, ...] = ()


@dataclass(frozen=True)
class _ClientData:
    client_input: ClientInput
    random_bytes: RandomBytes
    nonce: bytes = b""
    head: bytes = b""
    enclave_key: bytes | None = None
    measurement: str = ""  # the attested one: the channel binds it
    aggregate_digest: str | None = None


def _allowlist(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ProtocolInputError("allow must be a list of measurements (96 hex digits each)")
    out = tuple(str(m).strip().lower() for m in items if str(m).strip())
    if not out or not all(len(m) == 96 and set(m) <= _HEX96 for m in out):
        raise ProtocolInputError("allow must be a list of measurements (96 hex digits each)")
    return out


def _root(value: Any) -> Certificate | None:
    """The trusted vendor root from its PEM text (a string: parameters are JSON)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolInputError("attestation_root must be a root certificate in PEM (a string)")
    try:
        return Certificate.from_pem(value.encode("ascii"))
    except (UnicodeEncodeError, ValueError) as exc:
        raise ProtocolInputError(f"attestation_root is not a PEM certificate: {exc}") from None


class TeeProtocol(AggregationProtocol):
    name = "tee"
    secure = True
    evidence_stages = ("SubmitSealed",)
    guarantee = (
        "SIMULATED TEE: clients send updates only to an enclave key bound by a verified "
        "quote (measurement allowlist, debug off, minimum svn, fresh nonce), and the enclave "
        "releases only the weighted sum of at least min_survivors updates; the enclave, its "
        "platform and the vendor root are software (the simulated root key is public), so "
        "nothing is isolated from the aggregator's host in fact: " + SIMULATED_NOTICE
    )
    stages = (
        StageSpec(name="RequestQuote", sender="client", message_types=(RequestQuote.TYPE_NAME,)),
        StageSpec(name="Attest", sender="server", message_types=(Attest.TYPE_NAME,)),
        StageSpec(name="SubmitSealed", sender="client", message_types=(SubmitSealed.TYPE_NAME,)),
        StageSpec(name="BroadcastAggregate", sender="server",
                  message_types=(BroadcastAggregate.TYPE_NAME,)),
    )

    def __init__(
        self,
        *,
        min_survivors: int = 2,
        allow: Sequence[str] | str | None = None,
        min_svn: int = 1,
        svn: int = 1,
        debug: bool = False,
        production: bool = False,
        attestation_root: str | None = None,
        platform: SimulatedPlatform | None = None,
    ) -> None:
        for name, value in (("min_survivors", min_survivors), ("min_svn", min_svn), ("svn", svn)):
            if type(value) is not int or value < (1 if name == "min_survivors" else 0):
                raise ProtocolInputError(f"{name} must be a non-negative int (min_survivors >= 1)")
        if type(debug) is not bool or type(production) is not bool:
            raise ProtocolInputError("debug and production must be booleans")
        self.min_survivors, self.min_svn, self.svn = min_survivors, min_svn, svn
        self.debug, self.production = debug, production
        self.allow = _allowlist(allow)
        root = _root(attestation_root)
        # Kept as the certificate's own PEM so that `params` round-trips byte for byte.
        self.attestation_root = (root.pem().decode("ascii")
                                 if root is not None else None)
        # The simulated machine the aggregator runs on (fresh keys from the OS).
        self.platform = platform if platform is not None else SimulatedPlatform.create()
        self.measurement = measure(config=enclave_config(min_survivors=min_survivors))
        self.enclave = SimulatedEnclave(platform=self.platform, measurement=self.measurement,
                                        min_survivors=min_survivors, svn=svn, debug=debug)
        self.policy = AttestationPolicy(
            allowed_measurements=self.allow if self.allow is not None else (self.measurement,),
            min_svn=min_svn, production=production,
            **({"trusted_root": root} if root is not None else {}),
        )

    @property
    def params(self) -> dict[str, Any]:
        return {
            "min_survivors": self.min_survivors,
            "allow": list(self.allow) if self.allow is not None else None,
            "min_svn": self.min_svn,
            "svn": self.svn,
            "debug": self.debug,
            "production": self.production,
            "attestation_root": self.attestation_root,
        }

    def threshold(self, n_participants: int) -> int:
        return self.min_survivors

    def aggregate_tolerance(
        self, *, max_abs: float, clients: int, total_weight: float = 1.0, integer: bool = False
    ) -> float:
        """Exact: the enclave sums in float64 in the order `plain` uses."""
        return 0.0

    # -- set-up ------------------------------------------------------------------
    def init_server(self, setup: RoundSetup, random_bytes: RandomBytes) -> _ServerData:
        return _ServerData(random_bytes=random_bytes, sealed=self.enclave.start(random_bytes=random_bytes))

    def init_client(self, setup: RoundSetup, client_id: str, client_input: ClientInput,
                    random_bytes: RandomBytes) -> _ClientData:
        return _ClientData(client_input=client_input, random_bytes=random_bytes)

    # -- clients -----------------------------------------------------------------
    def client_send(self, stage: str, state: ClientState) -> tuple[ClientState, tuple[Message, ...]]:
        d: _ClientData = state.data
        setup = state.setup
        head = {"round_index": setup.round_index, "sender": state.client_id,
                "receiver": setup.aggregator_id}
        if stage == "RequestQuote":
            nonce = d.random_bytes(NONCE_BYTES)
            msg: Message = RequestQuote(**head, nonce=nonce)
            d = dataclasses.replace(d, nonce=nonce, head=transcript_head(setup, encode(msg)))
        elif d.enclave_key is None:  # SubmitSealed without a verified quote: abstain
            msg = SubmitSealed(**head, client_key=b"", sealed=np.zeros(0, dtype=np.uint8))
        else:
            own = agreement_key(d.random_bytes)
            context = channel_context(round_index=setup.round_index, client_id=state.client_id,
                                      client_key=own.public_key, enclave_key=d.enclave_key,
                                      measurement=d.measurement)
            inp = d.client_input
            sealed = seal_to_enclave(own=own, enclave_key=d.enclave_key, context=context,
                                     plaintext=encode_update(weight=inp.weight, vector=inp.vector),
                                     random_bytes=d.random_bytes)
            msg = SubmitSealed(**head, client_key=own.public_key,
                               sealed=np.frombuffer(sealed, dtype=np.uint8))
        return dataclasses.replace(state, data=d), (msg,)

    def client_receive(self, stage: str, state: ClientState, messages: Sequence[Message]) -> ClientState:
        if not messages:
            return state
        msg, d, me = messages[0], state.data, state.client_id
        if isinstance(msg, Attest):
            quote = Quote.from_json(msg.quote)
            body = verify_quote(
                quote=quote, policy=self.policy, nonce=d.nonce, enclave_public_key=msg.enclave_key,
                transcript_head=d.head, replay_cache=ReplayCache(), now=dt.datetime.now(dt.UTC),
            )
            d = dataclasses.replace(d, enclave_key=msg.enclave_key, measurement=body.measurement)
        elif isinstance(msg, BroadcastAggregate):
            if me not in msg.survivors or msg.weighted_sum.shape != (state.setup.vector.length,) \
                    or msg.weighted_sum.dtype != "<f8":
                raise ProtocolAbort(f"{me}: malformed aggregate from the aggregator")
            digest = Aggregate(weighted_sum=msg.weighted_sum, total_weight=msg.total_weight).digest()
            d = dataclasses.replace(d, aggregate_digest=digest)
        else:
            raise ProtocolAbort(f"{me}: unexpected {msg.TYPE_NAME}")
        return dataclasses.replace(state, data=d)

    def client_aggregate_digest(self, state: ClientState) -> str | None:
        return state.data.aggregate_digest

    # -- host and enclave -----------------------------------------------------------
    def server_receive(self, stage: str, state: ServerState, messages: Sequence[Message]) -> ServerState:
        d: _ServerData = state.data
        bad: dict[str, str] = {}
        if stage == "RequestQuote":
            challenges = []
            for m in messages:
                if isinstance(m, RequestQuote) and len(m.nonce) == NONCE_BYTES:
                    challenges.append((m.sender, m.nonce, encode(m)))
                else:
                    bad[m.sender] = "malformed attestation challenge"
            d = dataclasses.replace(d, challenges=tuple(challenges))
        else:  # SubmitSealed
            submissions = []
            for m in messages:
                if isinstance(m, SubmitSealed) and len(m.client_key) == PUBLIC_KEY_BYTES \
                        and m.sealed.ndim == 1 and m.sealed.shape[0] > 0:
                    submissions.append((m.sender, m.client_key, m.sealed.tobytes()))
                else:
                    bad[m.sender] = "no sealed update"
            sealed, rejected = self.enclave.ingest(d.sealed, setup=state.setup,
                                                   submissions=submissions,
                                                   random_bytes=d.random_bytes)
            bad.update(rejected)
            d = dataclasses.replace(d, sealed=sealed)
        state = self.server_drop(state, bad)
        return dataclasses.replace(state, data=d)

    def server_send(self, stage: str, state: ServerState) -> tuple[ServerState, tuple[Message, ...]]:
        d: _ServerData = state.data
        setup = state.setup
        head = {"round_index": setup.round_index, "sender": setup.aggregator_id}
        if stage == "Attest":
            enclave_key = self.enclave.public_key(d.sealed)
            out = tuple(
                Attest(**head, receiver=cid, enclave_key=enclave_key,
                       quote=self.enclave.quote(d.sealed, nonce=nonce,
                                                transcript_head=transcript_head(setup, raw)).to_json())
                for cid, nonce, raw in d.challenges if cid in state.active
            )
            return state, out
        release = self.enclave.release(d.sealed, survivors=state.active)
        aggregate = Aggregate(weighted_sum=release.weighted_sum, total_weight=release.total_weight)
        out = tuple(
            BroadcastAggregate(**head, receiver=cid, total_weight=aggregate.total_weight,
                               survivors=release.contributors, weighted_sum=aggregate.weighted_sum)
            for cid in state.active
        )
        d = dataclasses.replace(d, aggregate=aggregate, contributors=tuple(release.contributors))
        return dataclasses.replace(state, data=d), out

    def contributors(self, state: ServerState) -> tuple[str, ...]:
        return state.data.contributors

    def result(self, state: ServerState) -> Aggregate:
        if state.data.aggregate is None:
            raise ProtocolAbort("no aggregate was released")
        return state.data.aggregate

    def round_stats(self, state: ServerState) -> dict[str, Any]:
        """Figures for the round log."""
        root = self.policy.trusted_root
        return {"measurement": self.measurement, "platform_id": self.platform.platform_id,
                "simulated": True, "notice": SIMULATED_NOTICE,
                "attestation_root_sha256": root_fingerprint(root),
                "attestation_root_simulated": is_simulated_root(root)}
