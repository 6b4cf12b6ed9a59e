"""`ckks`: the aggregator adds CKKS ciphertexts it cannot decrypt.

A round, stage by stage (C: every client, S: the aggregator to each client):

1. AdvertiseKey (C)       a fresh X25519 public key for the round.
2. KeyDirectory (S)       every active client's key.
3. ShareSeed (C)          each client draws a candidate key seed and seals it to
                          every other client (about 100 bytes per peer).
4. DeliverSeed (S)        the aggregator names the keyholder (the first active
                          client with a well-formed share) and relays its sealed
                          seed to each client; every client rebuilds the secret key.
5. SubmitCiphertext (C)   Enc(w_i v_i), N reals per ciphertext, and w_i in clear.
6. RequestDecryption (S)  the sum over the contributors goes to the first
                          `decryptors` of them; the others learn who contributed.
7. ReturnDecryption (C)   each decryptor returns the decoded sum plus Gaussian
                          flooding noise (`CkksParams.flood_sigma`).
8. BroadcastAggregate (S) the mean of the returned decryptions, to every client.

Every round uses a new key, so no key is decrypted under more than `decryptors`
times. Rules enforced, from the shared-key design: the aggregator never holds
key material (`CkksContext.public`); individual ciphertexts go to no other client
(only a sum of two or more, or a client's own); a decryption reaches the
aggregator only noise-flooded. Once the sum is fixed (stage 6) a contributor
that drops out stays in the aggregate: removing it would reveal its update
(the difference of the two sums), so its drop reason says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal

from protocols.ckks import keyshare
from protocols.ckks.context import KEY_SEED_BYTES, CiphertextError, CkksContext
from protocols.ckks.messages import (
    AdvertiseKey,
    BroadcastAggregate,
    DeliverSeed,
    KeyDirectory,
    RequestDecryption,
    ReturnDecryption,
    ShareSeed,
    SubmitCiphertext,
    pack,
    unpack,
)
from protocols.ckks.noise import gaussian
from protocols.ckks.params import CkksParams
from protocols.errors import ProtocolAbort, ProtocolInputError
from protocols.hazmat.aead import NONCE_BYTES, TAG_BYTES
from protocols.hazmat.kex import PUBLIC_KEY_BYTES, AgreementKey
from protocols.messages import Message, canonical_json
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

SEALED_SEED_BYTES = NONCE_BYTES + KEY_SEED_BYTES + TAG_BYTES


@dataclass(frozen=True)
class _ServerData:
    random_bytes: RandomBytes
    keys: tuple[tuple[str, bytes], ...] = ()
    directory: tuple[tuple[str, bytes], ...] = ()
    shares: tuple[tuple[str, tuple[str, ...], bytes], ...] = ()
    keyholder: str | None = None
    submitted: tuple[tuple[str, float, tuple[bytes, ...]], ...] = ()
    total: Any = None  # list of SEAL ciphertexts: the running sum of `submitted`
    contributors: tuple[str, ...] = ()
    decryptors: tuple[str, ...] = ()
    decryptions: tuple[tuple[str, np.ndarray], ...] = ()
    aggregate: Aggregate | None = None
    ciphertext_bytes: int = 0


@dataclass(frozen=True)
class _ClientData:
    client_input: ClientInput
    random_bytes: RandomBytes
    kex: AgreementKey | None = None
    directory: tuple[tuple[str, bytes], ...] = ()
    seed: bytes | None = None
    context: CkksContext | None = None
    release: np.ndarray | None = None
    aggregate_digest: str | None = None


def _spec(name: str, sender: str, message: type[Message]) -> StageSpec:
    return StageSpec(name=name, sender=sender, message_types=(message.TYPE_NAME,))  # type: ignore[arg-type]


class CkksProtocol(AggregationProtocol):
    name = "ckks"
    secure = True
    evidence_stages = ("ReturnDecryption",)
    guarantee = (
        "the aggregator adds CKKS ciphertexts (TenSEAL/SEAL, 128-bit parameters) without any "
        "key and learns only the noise-flooded weighted sum of at least min_survivors clients; "
        "all clients share the round's secret key, so a client colluding with the aggregator "
        "could decrypt any ciphertext; weights are public; relayed X25519 keys are unsigned "
        "(honest-but-curious aggregator)"
    )
    stages = (
        _spec("AdvertiseKey", "client", AdvertiseKey),
        _spec("KeyDirectory", "server", KeyDirectory),
        _spec("ShareSeed", "client", ShareSeed),
        _spec("DeliverSeed", "server", DeliverSeed),
        _spec("SubmitCiphertext", "client", SubmitCiphertext),
        _spec("RequestDecryption", "server", RequestDecryption),
        _spec("ReturnDecryption", "client", ReturnDecryption),
        _spec("BroadcastAggregate", "server", BroadcastAggregate),
    )

    def __init__(
        self,
        *,
        min_survivors: int = 2,
        poly_modulus_degree: int = 8192,
        coeff_mod_bit_sizes: Sequence[int] | str = (60, 60, 60, 38),
        scale_bits: int = 100,
        flood_bits: int = 40,
        decryptors: int = 2,
    ) -> None:
        if type(min_survivors) is not int or min_survivors < 1:
            raise ProtocolInputError("min_survivors must be an int >= 1")
        self.min_survivors = min_survivors
        self.ckks = CkksParams(
            poly_modulus_degree=poly_modulus_degree,
            coeff_mod_bit_sizes=coeff_mod_bit_sizes,  # type: ignore[arg-type]
            scale_bits=scale_bits,
            flood_bits=flood_bits,
            decryptors=decryptors,
        )
        # Binds sealed seeds to these parameters and this SEAL build: a client whose
        # TenSEAL would derive a different key from the same seed cannot open it.
        self.params_digest = hashlib.sha256(
            canonical_json({"ckks": self.ckks.to_dict(), "tenseal": tenseal.__version__})
        ).hexdigest()
        self._public = CkksContext.public(self.ckks)

    @property
    def params(self) -> dict[str, Any]:
        return {"min_survivors": self.min_survivors, **self.ckks.to_dict()}

    def threshold(self, n_participants: int) -> int:
        return self.min_survivors

    def aggregate_tolerance(
        self, *, max_abs: float, clients: int, total_weight: float = 1.0, integer: bool = False
    ) -> float:
        """The stated bound on |aggregate - exact weighted sum| per coordinate, for a
        round of `clients` participants whose exact sum peaks at `max_abs`: float64
        encode/decode error (measured below 2^-50 relative) with a 2^10 margin, plus
        ten standard deviations of the averaged flooding noise."""
        sigma = self.ckks.flood_sigma(clients) / math.sqrt(self.ckks.decryptors)
        return 2.0**-40 * max(1.0, max_abs) + 10.0 * sigma

    # -- set-up ------------------------------------------------------------------
    def init_server(self, setup: RoundSetup, random_bytes: RandomBytes) -> _ServerData:
        return _ServerData(random_bytes=random_bytes)

    def init_client(
        self, setup: RoundSetup, client_id: str, client_input: ClientInput,
        random_bytes: RandomBytes,
    ) -> _ClientData:
        v = client_input.vector
        scaled = client_input.weight * v.astype(np.float64)
        bound = self.ckks.max_abs
        if scaled.size and float(np.abs(scaled).max()) >= bound:
            raise ProtocolInputError(
                f"{client_id}: |weight * value| reaches {float(np.abs(scaled).max()):.3g}; "
                f"ckks with these parameters encodes values below {bound:.3g}"
            )
        return _ClientData(client_input=client_input, random_bytes=random_bytes)

    # -- client side ------------------------------------------------------------
    def client_send(
        self, stage: str, state: ClientState
    ) -> tuple[ClientState, tuple[Message, ...]]:
        d: _ClientData = state.data
        head = {"round_index": state.setup.round_index, "sender": state.client_id,
                "receiver": state.setup.aggregator_id}
        if stage == "AdvertiseKey":
            kex = keyshare.agreement_key(d.random_bytes)
            d = dataclasses.replace(d, kex=kex)
            msg: Message = AdvertiseKey(**head, public_key=kex.public_key)
        elif stage == "ShareSeed":
            d, msg = self._share_seed(state, d, head)
        elif stage == "SubmitCiphertext":
            # The aggregator cannot see a length inside a ciphertext: an input that
            # does not fit the round's vector is withheld here, and the empty
            # submission drops this client.
            if d.context is None or not state.setup.vector.matches(d.client_input.vector):
                sizes, data = pack([])
                msg = SubmitCiphertext(**head, weight=0.0, sizes=sizes, data=data)
            else:
                values = d.client_input.weight * d.client_input.vector.astype(np.float64)
                sizes, data = pack(d.context.encrypt(values, random_bytes=d.random_bytes))
                msg = SubmitCiphertext(**head, weight=d.client_input.weight, sizes=sizes, data=data)
        else:  # ReturnDecryption
            values = d.release if d.release is not None else np.zeros(0, dtype=np.float64)
            msg = ReturnDecryption(**head, values=values)
        return dataclasses.replace(state, data=d), (msg,)

    def _share_seed(
        self, state: ClientState, d: _ClientData, head: dict[str, Any]
    ) -> tuple[_ClientData, Message]:
        if d.kex is None or not d.directory:
            return d, ShareSeed(**head, recipients=(), sealed=b"")
        seed = d.random_bytes(KEY_SEED_BYTES)
        recipients, sealed = [], []
        for peer, public_key in d.directory:
            if peer == state.client_id:
                continue
            recipients.append(peer)
            sealed.append(
                keyshare.seal_seed(
                    own=d.kex, peer_public_key=public_key, seed=seed,
                    round_index=state.setup.round_index, sender=state.client_id, receiver=peer,
                    params_digest=self.params_digest, random_bytes=d.random_bytes,
                )
            )
        d = dataclasses.replace(d, seed=seed)
        return d, ShareSeed(**head, recipients=tuple(recipients), sealed=b"".join(sealed))

    def client_receive(
        self, stage: str, state: ClientState, messages: Sequence[Message]
    ) -> ClientState:
        if not messages:  # dropped by the aggregator: the client sits the round out
            return state
        msg, d, me = messages[0], state.data, state.client_id
        if isinstance(msg, KeyDirectory):
            d = dataclasses.replace(d, directory=self._check_directory(me, d, msg))
        elif isinstance(msg, DeliverSeed):
            d = dataclasses.replace(d, context=self._receive_seed(state, d, msg))
        elif isinstance(msg, RequestDecryption):
            d = dataclasses.replace(d, release=self._decrypt(state, d, msg))
        elif isinstance(msg, BroadcastAggregate):
            d = dataclasses.replace(d, aggregate_digest=self._check_aggregate(state, msg))
        else:
            raise ProtocolAbort(f"{me}: unexpected {msg.TYPE_NAME}")
        return dataclasses.replace(state, data=d)

    @staticmethod
    def _check_directory(me: str, d: _ClientData, msg: KeyDirectory) -> tuple[tuple[str, bytes], ...]:
        keys = msg.public_keys
        if (
            len(keys) != PUBLIC_KEY_BYTES * len(msg.clients)
            or list(msg.clients) != sorted(set(msg.clients))
        ):
            raise ProtocolAbort(f"{me}: malformed key directory from the aggregator")
        directory = tuple(
            (c, keys[i * PUBLIC_KEY_BYTES : (i + 1) * PUBLIC_KEY_BYTES])
            for i, c in enumerate(msg.clients)
        )
        if d.kex is None or dict(directory).get(me) != d.kex.public_key:
            raise ProtocolAbort(f"{me}: the key directory does not carry this client's own key")
        return directory

    def _receive_seed(self, state: ClientState, d: _ClientData, msg: DeliverSeed) -> CkksContext:
        me, keys = state.client_id, dict(d.directory)
        if msg.keyholder == me:
            if d.seed is None or msg.sealed:
                raise ProtocolAbort(f"{me}: named keyholder without having shared a seed")
            seed = d.seed
        else:
            if msg.keyholder not in keys or d.kex is None:
                raise ProtocolAbort(f"{me}: keyholder {msg.keyholder!r} is not in the directory")
            seed = keyshare.open_seed(
                own=d.kex, sender_public_key=keys[msg.keyholder], sealed=msg.sealed,
                round_index=state.setup.round_index, sender=msg.keyholder, receiver=me,
                params_digest=self.params_digest,
            )
        return CkksContext.from_key_seed(self.ckks, seed)

    def _decrypt(self, state: ClientState, d: _ClientData, msg: RequestDecryption) -> np.ndarray | None:
        me, contributors = state.client_id, msg.contributors
        if not msg.decrypt:
            return None
        if d.context is None or me not in contributors:
            raise ProtocolAbort(f"{me}: asked to decrypt a sum it holds no key for")
        if len(contributors) < 2 and tuple(contributors) != (me,):
            # A "sum" of one other client is that client's ciphertext.
            raise ProtocolAbort(f"{me}: refuses to decrypt another client's ciphertext")
        blobs = unpack(msg.sizes, msg.data)
        length = state.setup.vector.length
        if blobs is None or len(blobs) != self.ckks.chunks(length):
            raise ProtocolAbort(f"{me}: malformed sum ciphertext from the aggregator")
        try:
            exact = d.context.decrypt(blobs, length=length)
        except CiphertextError as exc:
            raise ProtocolAbort(f"{me}: sum ciphertext rejected: {exc}") from None
        if not np.isfinite(exact).all():
            raise ProtocolAbort(f"{me}: the sum does not decrypt to finite values")
        # B counts every participant (public), not the contributors the aggregator names.
        sigma = self.ckks.flood_sigma(len(state.setup.participants))
        return exact + gaussian(length, sigma=sigma, random_bytes=d.random_bytes)

    @staticmethod
    def _check_aggregate(state: ClientState, msg: BroadcastAggregate) -> str:
        me = state.client_id
        if me not in msg.contributors or msg.weighted_sum.shape != (state.setup.vector.length,) \
                or msg.weighted_sum.dtype != "<f8":
            raise ProtocolAbort(f"{me}: malformed aggregate from the aggregator")
        return Aggregate(weighted_sum=msg.weighted_sum, total_weight=msg.total_weight).digest()

    def client_aggregate_digest(self, state: ClientState) -> str | None:
        return state.data.aggregate_digest

    # -- server side ------------------------------------------------------------
    def server_drop(self, state: ServerState, reasons: Mapping[str, str]) -> ServerState:
        committed = set(state.data.contributors)
        noted = {
            c: f"{why}; its update is in the aggregate (the sum was fixed before it left)"
            if c in committed else why
            for c, why in reasons.items()
        }
        return super().server_drop(state, noted)

    def server_receive(
        self, stage: str, state: ServerState, messages: Sequence[Message]
    ) -> ServerState:
        handler: Callable[[ServerState, Sequence[Message]], ServerState] = {
            "AdvertiseKey": self._receive_keys,
            "ShareSeed": self._receive_shares,
            "SubmitCiphertext": self._receive_ciphertexts,
            "ReturnDecryption": self._receive_decryptions,
        }[stage]
        return handler(state, messages)

    def _receive_keys(self, state: ServerState, messages: Sequence[Message]) -> ServerState:
        keys, bad = [], {}
        for m in messages:
            if isinstance(m, AdvertiseKey) and len(m.public_key) == PUBLIC_KEY_BYTES:
                keys.append((m.sender, m.public_key))
            else:
                bad[m.sender] = "malformed X25519 key"
        state = self.server_drop(state, bad)
        return dataclasses.replace(state, data=dataclasses.replace(state.data, keys=tuple(keys)))

    def _receive_shares(self, state: ServerState, messages: Sequence[Message]) -> ServerState:
        directory = [c for c, _ in state.data.directory]
        shares, bad = [], {}
        for m in messages:
            expected = tuple(c for c in directory if c != m.sender)
            if (
                isinstance(m, ShareSeed)
                and m.recipients == expected
                and len(m.sealed) == SEALED_SEED_BYTES * len(expected)
            ):
                shares.append((m.sender, m.recipients, m.sealed))
            else:
                bad[m.sender] = "malformed key-seed share"
        state = self.server_drop(state, bad)
        return dataclasses.replace(state, data=dataclasses.replace(state.data, shares=tuple(shares)))

    def _receive_ciphertexts(self, state: ServerState, messages: Sequence[Message]) -> ServerState:
        d: _ServerData = state.data
        chunks = self.ckks.chunks(state.setup.vector.length)
        total, submitted, bad, nbytes = d.total, [], {}, d.ciphertext_bytes
        for m in messages:  # sorted by sender: a fixed summation order
            blobs = unpack(m.sizes, m.data) if isinstance(m, SubmitCiphertext) else None
            if blobs is None or len(blobs) != chunks:
                bad[m.sender] = f"expected {chunks} ciphertext(s)"
                continue
            try:
                cts = self._public.load(blobs)
            except CiphertextError as exc:
                bad[m.sender] = str(exc)
                continue
            total = self._public.accumulate(total, cts)
            submitted.append((m.sender, m.weight, blobs))
            nbytes += int(m.data.shape[0])
        state = self.server_drop(state, bad)
        data = dataclasses.replace(d, total=total, submitted=tuple(submitted), ciphertext_bytes=nbytes)
        return dataclasses.replace(state, data=data)

    def _receive_decryptions(self, state: ServerState, messages: Sequence[Message]) -> ServerState:
        d: _ServerData = state.data
        length = state.setup.vector.length
        got, bad = [], {}
        for m in messages:
            if not isinstance(m, ReturnDecryption):
                bad[m.sender] = "not a decryption"
            elif m.sender in d.decryptors:
                if m.values.shape == (length,) and m.values.dtype == "<f8" \
                        and np.isfinite(m.values).all():
                    got.append((m.sender, m.values))
                else:
                    bad[m.sender] = "malformed decryption"
            elif m.values.shape != (0,):
                bad[m.sender] = "sent a decryption it was not asked for"
        state = self.server_drop(state, bad)
        if not got:
            return dataclasses.replace(state, aborted=(
                f"round {state.setup.round_index}: no decryptor returned the sum"))
        return dataclasses.replace(state, data=dataclasses.replace(d, decryptions=tuple(got)))

    def server_send(
        self, stage: str, state: ServerState
    ) -> tuple[ServerState, tuple[Message, ...]]:
        sender = {
            "KeyDirectory": self._send_directory,
            "DeliverSeed": self._send_seeds,
            "RequestDecryption": self._send_sum,
            "BroadcastAggregate": self._send_aggregate,
        }[stage]
        state, bodies = sender(state)
        setup = state.setup
        out = tuple(
            cls(round_index=setup.round_index, sender=setup.aggregator_id, receiver=cid, **fields)
            for cid, (cls, fields) in bodies.items()
        )
        return state, out

    def _send_directory(self, state: ServerState) -> tuple[ServerState, dict[str, Any]]:
        directory = tuple((c, k) for c, k in state.data.keys if c in state.active)
        fields = {"clients": tuple(c for c, _ in directory),
                  "public_keys": b"".join(k for _, k in directory)}
        data = dataclasses.replace(state.data, directory=directory)
        return dataclasses.replace(state, data=data), {c: (KeyDirectory, fields) for c, _ in directory}

    def _send_seeds(self, state: ServerState) -> tuple[ServerState, dict[str, Any]]:
        shares = [s for s in state.data.shares if s[0] in state.active]
        if not shares:
            return dataclasses.replace(state, aborted="no client shared a key seed"), {}
        keyholder, recipients, sealed = shares[0]
        blobs = {
            r: sealed[i * SEALED_SEED_BYTES : (i + 1) * SEALED_SEED_BYTES]
            for i, r in enumerate(recipients)
        }
        bodies = {
            c: (DeliverSeed, {"keyholder": keyholder, "sealed": b"" if c == keyholder else blobs[c]})
            for c in state.active
        }
        data = dataclasses.replace(state.data, keyholder=keyholder)
        return dataclasses.replace(state, data=data), bodies

    def _send_sum(self, state: ServerState) -> tuple[ServerState, dict[str, Any]]:
        d: _ServerData = state.data
        total = d.total
        for cid, _, blobs in d.submitted:  # left after submitting: take it out again
            if cid not in state.active:
                total = self._public.subtract(total, self._public.load(blobs))
        contributors = tuple(c for c, _, _ in d.submitted if c in state.active)
        if not contributors:
            return dataclasses.replace(state, aborted="no ciphertext to aggregate"), {}
        # A lone contributor decrypts its own ciphertext; no one else ever sees it.
        decryptors = contributors[: self.ckks.decryptors] if len(contributors) > 1 else contributors
        sizes, data = pack(self._public.save(total))
        empty_sizes, empty = pack([])
        bodies = {
            c: (RequestDecryption, {
                "contributors": contributors,
                "decrypt": c in decryptors,
                "sizes": sizes if c in decryptors else empty_sizes,
                "data": data if c in decryptors else empty,
            })
            for c in state.active
        }
        new = dataclasses.replace(d, total=None, contributors=contributors, decryptors=decryptors)
        return dataclasses.replace(state, data=new), bodies

    def _send_aggregate(self, state: ServerState) -> tuple[ServerState, dict[str, Any]]:
        d: _ServerData = state.data
        values = np.mean(np.stack([v for _, v in d.decryptions]), axis=0)
        weights = [w for c, w, _ in d.submitted if c in d.contributors]
        if state.setup.vector.dtype == "int64" and all(float(w).is_integer() for w in weights):
            values = np.rint(values)  # exact: the error is far below 1/2 (see the docs)
        aggregate = Aggregate(weighted_sum=values.astype(np.float64), total_weight=math.fsum(weights))
        fields = {"total_weight": aggregate.total_weight, "contributors": d.contributors,
                  "weighted_sum": aggregate.weighted_sum}
        bodies = {c: (BroadcastAggregate, fields) for c in state.active}
        return dataclasses.replace(state, data=dataclasses.replace(d, aggregate=aggregate)), bodies

    def contributors(self, state: ServerState) -> tuple[str, ...]:
        return state.data.contributors

    def result(self, state: ServerState) -> Aggregate:
        aggregate = state.data.aggregate
        if aggregate is None:
            raise ProtocolAbort("no aggregate was computed")
        return aggregate

    def round_stats(self, state: ServerState) -> dict[str, Any]:
        """Figures for the round log."""
        d: _ServerData = state.data
        return {
            "ciphertext_bytes": d.ciphertext_bytes,
            "ciphertexts_per_client": self.ckks.chunks(state.setup.vector.length),
            "contributors": list(d.contributors),
            "keyholder": d.keyholder,
            "decryptors": list(d.decryptors),
            "flood_sigma": self.ckks.flood_sigma(len(state.setup.participants)),
        }
