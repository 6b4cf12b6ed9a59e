"""`ckks`: the aggregator adds nothing up; it relays CKKS ciphertexts it cannot decrypt.

A round, stage by stage (C: every client, S: the aggregator to each client):

1. AdvertiseKey (C)        a fresh X25519 public key for the round, signed with
                           the client's roster identity key.
2. KeyDirectory (S)        every active client's key and signature; a client
                           refuses an entry not signed by that client's roster key.
3. ShareSeed (C)           each client draws a candidate key seed and seals it to
                           every other client (about 100 bytes per peer).
4. DeliverSeed (S)         the aggregator names the keyholder (the first active
                           client with a well-formed share) and relays its sealed
                           seed to each client; every client rebuilds the secret key.
5. SubmitCiphertext (C)    Enc(w_i v_i), N reals per ciphertext, w_i in clear, and
                           a signature of the ciphertexts' digest, w_i and the keyholder.
6. ProposeContributors (S) the ONE contributor list, with each one's digest.
7. SignContributors (C)    each client on the list with its own digest signs it;
                           a client signs one list per round.
8. RequestDecryption (S)   the list's first `decryptors` get every listed ciphertext
                           with its signature and the list's signatures (a majority
                           of the participants); the others get the list alone.
9. ReturnDecryption (C)    each decryptor adds the ciphertexts up itself, decrypts
                           once, and returns the sum plus Gaussian flooding noise
                           (`CkksParams.flood_sigma`).
10. BroadcastAggregate (S) the mean of the returned decryptions, to every client.

Every round uses a new key, and at most `decryptors` clients decrypt its one
sum. Rules enforced, from the shared-key design: the aggregator never holds key
material (`CkksContext.public`); no client is handed another's ciphertext except
a decryptor, as one term of the signed list it adds up itself; a decryption
reaches the aggregator only noise-flooded. Once the list is fixed (stage 6) a
contributor that drops out stays in the aggregate: releasing a sum without it
would reveal its update, so its drop reason says so. The client's checks are in
`protocols.ckks.client`, the statements they sign in `protocols.ckks.signed`;
what single-key CKKS cannot withstand (a client colluding with the aggregator)
is in docs/ckks_tee.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tenseal

from protocols.ckks import audit, client, server
from protocols.ckks.context import CkksContext
from protocols.ckks.messages import (
    AdvertiseKey,
    BroadcastAggregate,
    DeliverSeed,
    KeyDirectory,
    ProposeContributors,
    RequestDecryption,
    ReturnDecryption,
    ShareSeed,
    SignContributors,
    SubmitCiphertext,
)
from protocols.ckks.params import CkksParams
from protocols.ckks.rules import Rules
from protocols.errors import ProtocolAbort, ProtocolInputError
from protocols.messages import Message, canonical_json
from protocols.roster import Identities
from protocols.stages import (
    Aggregate,
    AggregationProtocol,
    ClientInput,
    ClientState,
    RandomBytes,
    RoundSetup,
    ServerState,
    Side,
    StageSpec,
)


def _spec(name: str, sender: Side, message: type[Message]) -> StageSpec:
    return StageSpec(name=name, sender=sender, message_types=(message.TYPE_NAME,))


class CkksProtocol(AggregationProtocol):
    name = "ckks"
    secure = True
    evidence_stages = ("ReturnDecryption",)
    guarantee = (
        "the aggregator relays CKKS ciphertexts (TenSEAL/SEAL, 128-bit parameters) without any "
        "key and learns only the noise-flooded weighted sum over one contributor list signed by "
        "a majority of the participants, of at least min_survivors clients (keys, ciphertexts "
        "and the list signed with roster keys: an active aggregator is refused); all clients "
        "share the round's secret key, so the aggregator colluding with any one client, or a "
        "curious decryptor, can read every ciphertext; weights are public"
    )
    stages = (
        _spec("AdvertiseKey", "client", AdvertiseKey),
        _spec("KeyDirectory", "server", KeyDirectory),
        _spec("ShareSeed", "client", ShareSeed),
        _spec("DeliverSeed", "server", DeliverSeed),
        _spec("SubmitCiphertext", "client", SubmitCiphertext),
        _spec("ProposeContributors", "server", ProposeContributors),
        _spec("SignContributors", "client", SignContributors),
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
        identities: Identities | None = None,
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
        # Every signed statement and every sealed seed binds these parameters and this
        # SEAL build: a client whose TenSEAL would derive a different key from the same
        # seed cannot open it, and a signature made under other parameters is refused.
        self.params_digest = hashlib.sha256(
            canonical_json({"params": self.params, "tenseal": tenseal.__version__})
        ).hexdigest()
        self.identities = identities
        self.rules = Rules(ckks=self.ckks, min_survivors=min_survivors,
                           params_digest=self.params_digest, identities=identities)
        self._public = CkksContext.public(self.ckks)

    def bind(self, identities: Identities) -> CkksProtocol:
        """The same protocol with every party's roster identity key: keys, ciphertexts
        and the contributor list are then signed and checked against the pinned roster
        (a must against an active aggregator, which could otherwise substitute keys)."""
        return type(self)(identities=identities, **self.params)

    @property
    def params(self) -> dict[str, Any]:
        return {"min_survivors": self.min_survivors, **self.ckks.to_dict()}

    def threshold(self, n_participants: int) -> int:
        return self.rules.threshold(n_participants)

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
    def init_server(self, setup: RoundSetup, random_bytes: RandomBytes) -> server.ServerData:
        return server.ServerData(random_bytes=random_bytes)

    def init_client(
        self, setup: RoundSetup, client_id: str, client_input: ClientInput,
        random_bytes: RandomBytes,
    ) -> client.ClientData:
        v = client_input.vector
        scaled = client_input.weight * v.astype(np.float64)
        bound = self.ckks.max_abs
        if scaled.size and float(np.abs(scaled).max()) >= bound:
            raise ProtocolInputError(
                f"{client_id}: |weight * value| reaches {float(np.abs(scaled).max()):.3g}; "
                f"ckks with these parameters encodes values below {bound:.3g}"
            )
        return client.ClientData(client_input=client_input, random_bytes=random_bytes)

    # -- client side ------------------------------------------------------------
    def client_send(
        self, stage: str, state: ClientState
    ) -> tuple[ClientState, tuple[Message, ...]]:
        rules, d = self.rules, state.data
        msg: Message
        if stage == "AdvertiseKey":
            d, msg = client.advertise(rules, state)
        elif stage == "ShareSeed":
            d, msg = client.share_seed(rules, state)
        elif stage == "SubmitCiphertext":
            d, msg = client.submit(rules, state)
        elif stage == "SignContributors":
            msg = client.sign_list(rules, state)
        else:  # ReturnDecryption
            msg = client.return_decryption(state)
        return dataclasses.replace(state, data=d), (msg,)

    def client_receive(
        self, stage: str, state: ClientState, messages: Sequence[Message]
    ) -> ClientState:
        if not messages:  # dropped by the aggregator: the client sits the round out
            return state
        msg, rules = messages[0], self.rules
        if isinstance(msg, KeyDirectory):
            d = client.check_directory(rules, state, msg)
        elif isinstance(msg, DeliverSeed):
            d = client.receive_seed(rules, state, msg)
        elif isinstance(msg, ProposeContributors):
            d = client.check_proposal(rules, state, msg)
        elif isinstance(msg, RequestDecryption):
            d = client.receive_request(rules, state, msg)
        elif isinstance(msg, BroadcastAggregate):
            d = client.check_aggregate(state, msg)
        else:
            raise ProtocolAbort(f"{state.client_id}: unexpected {msg.TYPE_NAME}")
        return dataclasses.replace(state, data=d)

    def client_aggregate_digest(self, state: ClientState) -> str | None:
        return state.data.aggregate_digest

    # -- server side ------------------------------------------------------------
    def server_drop(self, state: ServerState, reasons: Mapping[str, str]) -> ServerState:
        committed = set(state.data.contributors)
        noted = {
            c: f"{why}; its update is in the aggregate (the list was fixed before it left)"
            if c in committed else why
            for c, why in reasons.items()
        }
        return super().server_drop(state, noted)

    def server_receive(
        self, stage: str, state: ServerState, messages: Sequence[Message]
    ) -> ServerState:
        rules = self.rules
        if stage == "AdvertiseKey":
            state, bad = server.receive_keys(rules, state, messages)
        elif stage == "ShareSeed":
            state, bad = server.receive_shares(rules, state, messages)
        elif stage == "SubmitCiphertext":
            state, bad = server.receive_ciphertexts(rules, self._public, state, messages)
        elif stage == "SignContributors":
            state, bad = server.receive_list_signatures(rules, state, messages)
        else:  # ReturnDecryption
            state, bad = server.receive_decryptions(rules, state, messages)
        return self.server_drop(state, bad)

    def server_send(
        self, stage: str, state: ServerState
    ) -> tuple[ServerState, tuple[Message, ...]]:
        sender = {
            "KeyDirectory": server.send_directory,
            "DeliverSeed": server.send_seeds,
            "ProposeContributors": server.send_proposal,
            "RequestDecryption": server.send_requests,
            "BroadcastAggregate": server.send_aggregate,
        }[stage]
        state, bodies = sender(self.rules, state)
        setup = state.setup
        out = tuple(
            cls(round_index=setup.round_index, sender=setup.aggregator_id, receiver=cid, **fields)
            for cid, (cls, fields) in bodies.items()
        )
        return state, out

    def contributors(self, state: ServerState) -> tuple[str, ...]:
        return state.data.contributors

    # -- transcripts ------------------------------------------------------------
    def transcript_meta(self, message: Message) -> dict[str, Any] | None:
        return audit.transcript_meta(message)

    def audit_round(self, view: Any) -> list[tuple[int, str]]:
        """Equivocation and the decryption rules, from the signed metas (see
        `protocols.ckks.audit`); `view.statement` is None for a round left open."""
        return audit.audit_round(decryptors=self.ckks.decryptors, view=view)

    def result(self, state: ServerState) -> Aggregate:
        aggregate = state.data.aggregate
        if aggregate is None:
            raise ProtocolAbort("no aggregate was computed")
        return aggregate

    def round_stats(self, state: ServerState) -> dict[str, Any]:
        """Figures for the round log."""
        d: server.ServerData = state.data
        return {
            "ciphertext_bytes": d.ciphertext_bytes,
            "ciphertexts_per_client": self.ckks.chunks(state.setup.vector.length),
            "contributors": list(d.contributors),
            "list_signers": [c for c, _ in d.list_signatures],
            "keyholder": d.keyholder,
            "decryptors": list(d.decryptors),
            "flood_sigma": self.ckks.flood_sigma(len(state.setup.participants)),
        }
