"""The client's steps of a ckks round, as pure functions over `ClientData`.

Against an active aggregator (the protocol bound to the roster) a client

- takes a key directory only if every entry is signed by that client's roster
  key for this round and these parameters, so the aggregator cannot slip its
  own X25519 key in and open the sealed key seed;
- signs its ciphertexts' digest, its weight and the keyholder;
- signs at most ONE contributor list per round, and only one that names it
  with the digest of the ciphertexts it submitted;
- as a decryptor, decrypts at most once, and only the homomorphic sum it adds
  up itself from the individual ciphertexts of that same list, each signed by
  its contributor, with the list signed by a majority of the participants and
  itself among the list's first `decryptors`. A message has no field for a
  ready-made sum, so a lone ciphertext cannot be passed off as one.

Every refusal is a `ProtocolAbort`, raised before anything is released.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from protocols.ckks import keyshare, signed
from protocols.ckks.context import KEY_SEED_BYTES, CiphertextError, CkksContext
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
    pack,
    unpack,
)
from protocols.ckks.noise import gaussian
from protocols.ckks.rules import Rules
from protocols.errors import ProtocolAbort
from protocols.hazmat.kex import PUBLIC_KEY_BYTES, AgreementKey
from protocols.stages import Aggregate, ClientInput, ClientState, RandomBytes


@dataclass(frozen=True)
class ClientData:
    client_input: ClientInput
    random_bytes: RandomBytes
    kex: AgreementKey | None = None
    directory: tuple[tuple[str, bytes], ...] = ()
    seed: bytes | None = None
    keyholder: str | None = None
    context: CkksContext | None = None
    submitted: bytes | None = None  # the digest of the ciphertexts this client sent
    # The one contributor list this client signed: ids and ciphertext digests.
    signed_list: tuple[tuple[str, ...], tuple[bytes, ...]] | None = None
    decrypted: bool = False
    release: np.ndarray | None = None
    aggregate_digest: str | None = None


def _refuse(st: ClientState, why: str) -> ProtocolAbort:
    return ProtocolAbort(f"{st.client_id} refuses in ckks round {st.setup.round_index}: {why}")


def _head(st: ClientState) -> dict:
    return {"round_index": st.setup.round_index, "sender": st.client_id,
            "receiver": st.setup.aggregator_id}


def _sorted_participants(st: ClientState, ids: tuple[str, ...]) -> bool:
    return list(ids) == sorted(set(ids)) and set(ids) <= set(st.setup.participants)


# -- AdvertiseKey / KeyDirectory --------------------------------------------------------
def advertise(rules: Rules, st: ClientState) -> tuple[ClientData, AdvertiseKey]:
    d: ClientData = st.data
    kex = keyshare.agreement_key(d.random_bytes)
    statement = signed.advert_statement(round_index=st.setup.round_index,
                                        params_digest=rules.digest_for(st.setup),
                                        client_id=st.client_id, public_key=kex.public_key)
    msg = AdvertiseKey(**_head(st), public_key=kex.public_key,
                       signature=rules.sign(st.client_id, statement))
    return dataclasses.replace(d, kex=kex), msg


def check_directory(rules: Rules, st: ClientState, msg: KeyDirectory) -> ClientData:
    d: ClientData = st.data
    ids, n = tuple(msg.clients), len(msg.clients)
    if (
        len(msg.public_keys) != PUBLIC_KEY_BYTES * n
        or len(msg.signatures) != rules.signature_bytes(n)
        or not _sorted_participants(st, ids)
    ):
        raise _refuse(st, "malformed key directory from the aggregator")
    keys = signed.split(msg.public_keys, PUBLIC_KEY_BYTES)
    directory = tuple(zip(ids, keys, strict=True))
    if d.kex is None or dict(directory).get(st.client_id) != d.kex.public_key:
        raise _refuse(st, "the key directory does not carry this client's own key")
    if n < rules.threshold(len(st.setup.participants)):
        raise _refuse(st, f"a key directory of {n} clients, too few to release anything")
    roster = rules.roster
    if roster is not None:
        unsigned = signed.first_unsigned_key(roster, st.setup.round_index, rules.digest_for(st.setup),
                                             ids, keys, msg.signatures)
        if unsigned is not None:
            raise _refuse(st, f"the key relayed for {unsigned} is not signed by its roster key")
    return dataclasses.replace(d, directory=directory)


# -- ShareSeed / DeliverSeed -------------------------------------------------------------
def share_seed(rules: Rules, st: ClientState) -> tuple[ClientData, ShareSeed]:
    d: ClientData = st.data
    if d.kex is None or not d.directory:
        return d, ShareSeed(**_head(st), recipients=(), sealed=b"")
    seed = d.random_bytes(KEY_SEED_BYTES)
    recipients, sealed = [], []
    for peer, public_key in d.directory:
        if peer == st.client_id:
            continue
        recipients.append(peer)
        sealed.append(keyshare.seal_seed(
            own=d.kex, peer_public_key=public_key, seed=seed,
            round_index=st.setup.round_index, sender=st.client_id, receiver=peer,
            params_digest=rules.digest_for(st.setup), random_bytes=d.random_bytes,
        ))
    msg = ShareSeed(**_head(st), recipients=tuple(recipients), sealed=b"".join(sealed))
    return dataclasses.replace(d, seed=seed), msg


def receive_seed(rules: Rules, st: ClientState, msg: DeliverSeed) -> ClientData:
    d: ClientData = st.data
    me, keys = st.client_id, dict(d.directory)
    if msg.keyholder == me:
        if d.seed is None or msg.sealed:
            raise _refuse(st, "named keyholder without having shared a seed")
        seed = d.seed
    else:
        if msg.keyholder not in keys or d.kex is None:
            raise _refuse(st, f"keyholder {msg.keyholder!r} is not in the directory")
        seed = keyshare.open_seed(
            own=d.kex, sender_public_key=keys[msg.keyholder], sealed=msg.sealed,
            round_index=st.setup.round_index, sender=msg.keyholder, receiver=me,
            params_digest=rules.digest_for(st.setup),
        )
    return dataclasses.replace(d, keyholder=msg.keyholder,
                               context=CkksContext.from_key_seed(rules.ckks, seed))


# -- SubmitCiphertext --------------------------------------------------------------------
def submit(rules: Rules, st: ClientState) -> tuple[ClientData, SubmitCiphertext]:
    d: ClientData = st.data
    # The aggregator cannot see a length inside a ciphertext: an input that does not
    # fit the round's vector is withheld here, and the empty submission drops it.
    if d.context is None or d.keyholder is None or not st.setup.vector.matches(
        d.client_input.vector
    ):
        sizes, data = pack([])
        return d, SubmitCiphertext(**_head(st), weight=0.0, signature=b"", sizes=sizes, data=data)
    values = d.client_input.weight * d.client_input.vector.astype(np.float64)
    blobs = d.context.encrypt(values, random_bytes=d.random_bytes)
    digest = signed.ciphertext_digest(blobs)
    statement = signed.ciphertext_statement(
        round_index=st.setup.round_index, params_digest=rules.digest_for(st.setup),
        client_id=st.client_id, keyholder=d.keyholder, weight=d.client_input.weight,
        digest=digest,
    )
    sizes, data = pack(blobs)
    msg = SubmitCiphertext(**_head(st), weight=d.client_input.weight,
                           signature=rules.sign(st.client_id, statement), sizes=sizes, data=data)
    return dataclasses.replace(d, submitted=digest), msg


# -- ProposeContributors / SignContributors ----------------------------------------------
def check_proposal(rules: Rules, st: ClientState, msg: ProposeContributors) -> ClientData:
    d: ClientData = st.data
    ids, n = tuple(msg.contributors), len(msg.contributors)
    if d.signed_list is not None:
        raise _refuse(st, "a second contributor list in one round")
    if d.submitted is None:
        raise _refuse(st, "asked to sign a contributor list without having contributed")
    if msg.keyholder != d.keyholder:
        raise _refuse(st, f"the list names keyholder {msg.keyholder!r}, not {d.keyholder!r}")
    if len(msg.digests) != signed.DIGEST_BYTES * n or not _sorted_participants(st, ids):
        raise _refuse(st, "malformed contributor list from the aggregator")
    if n < rules.threshold(len(st.setup.participants)):
        raise _refuse(st, f"a contributor list of {n}, too few to release a sum")
    digests = signed.split(msg.digests, signed.DIGEST_BYTES)
    if st.client_id not in ids or digests[ids.index(st.client_id)] != d.submitted:
        raise _refuse(st, "the contributor list does not name this client's own ciphertexts")
    return dataclasses.replace(d, signed_list=(ids, digests))


def sign_list(rules: Rules, st: ClientState) -> SignContributors:
    d: ClientData = st.data
    if d.signed_list is None or d.keyholder is None:
        return SignContributors(**_head(st), signature=b"")
    ids, digests = d.signed_list
    statement = signed.list_statement(round_index=st.setup.round_index,
                                      params_digest=rules.digest_for(st.setup), keyholder=d.keyholder,
                                      contributors=ids, digests=digests)
    return SignContributors(**_head(st), signature=rules.sign(st.client_id, statement))


# -- RequestDecryption / ReturnDecryption ------------------------------------------------
def receive_request(rules: Rules, st: ClientState, msg: RequestDecryption) -> ClientData:
    d: ClientData = st.data
    if d.signed_list is None or tuple(msg.contributors) != d.signed_list[0]:
        raise _refuse(st, "the contributors named are not the list this client signed")
    if not msg.decrypt:
        return d
    if d.decrypted:
        raise _refuse(st, "a decryptor decrypts at most once per round")
    release = _decrypt(rules, st, msg)
    return dataclasses.replace(d, decrypted=True, release=release)


def _decrypt(rules: Rules, st: ClientState, msg: RequestDecryption) -> np.ndarray:
    d: ClientData = st.data
    ids, digests = d.signed_list  # type: ignore[misc]  # checked by the caller
    n, me, setup = len(ids), st.client_id, st.setup
    if d.context is None or d.keyholder is None:
        raise _refuse(st, "asked to decrypt a sum it holds no key for")
    if me not in ids[: rules.ckks.decryptors]:
        raise _refuse(st, f"only the list's first {rules.ckks.decryptors} contributors decrypt")
    if n < 2 and ids != (me,):  # a "sum" of one other client is that client's ciphertext
        raise _refuse(st, "refuses to decrypt another client's ciphertext")
    signers = tuple(msg.signers)
    if (
        list(signers) != sorted(set(signers))
        or not set(signers) <= set(ids)
        or len(signers) < signed.majority(len(setup.participants))
    ):
        raise _refuse(st, "the contributor list is not signed by a majority of the participants")
    chunks = rules.ckks.chunks(setup.vector.length)
    blobs = unpack(msg.sizes, msg.data)
    weights = msg.weights
    if (
        blobs is None
        or len(blobs) != n * chunks
        or weights.shape != (n,)
        or weights.dtype != "<f8"
        or not (np.isfinite(weights).all() and (weights >= 0).all())
        or len(msg.list_signatures) != rules.signature_bytes(len(signers))
        or len(msg.ciphertext_signatures) != rules.signature_bytes(n)
    ):
        raise _refuse(st, "malformed decryption request from the aggregator")
    per_client = [blobs[i * chunks : (i + 1) * chunks] for i in range(n)]
    if tuple(signed.ciphertext_digest(b) for b in per_client) != digests:
        raise _refuse(st, "the ciphertexts are not the ones on the list this client signed")
    _check_signatures(rules, st, msg, tuple(float(w) for w in weights))
    try:
        total = None
        for own_blobs in per_client:
            total = d.context.accumulate(total, d.context.load(own_blobs))
        exact = d.context.decrypt_loaded(total, length=setup.vector.length)
    except CiphertextError as exc:
        raise _refuse(st, f"a listed ciphertext is rejected: {exc}") from None
    if not np.isfinite(exact).all():
        raise _refuse(st, "the sum does not decrypt to finite values")
    # B counts every participant (public), not the contributors the aggregator names.
    sigma = rules.ckks.flood_sigma(len(setup.participants))
    return exact + gaussian(setup.vector.length, sigma=sigma, random_bytes=d.random_bytes)


def _check_signatures(rules: Rules, st: ClientState, msg: RequestDecryption,
                      weights: tuple[float, ...]) -> None:
    roster, d = rules.roster, st.data
    if roster is None:
        return
    ids, digests = d.signed_list
    r, params = st.setup.round_index, rules.digest_for(st.setup)
    statement = signed.list_statement(round_index=r, params_digest=params, keyholder=d.keyholder,
                                      contributors=ids, digests=digests)
    bad = signed.first_unsigned_list(roster, statement, tuple(msg.signers), msg.list_signatures)
    if bad is not None:
        raise _refuse(st, f"{bad}'s signature of the contributor list does not verify")
    bad = signed.first_unsigned_ciphertext(roster, r, params, d.keyholder, ids, weights,
                                           digests, msg.ciphertext_signatures)
    if bad is not None:
        raise _refuse(st, f"the ciphertexts listed for {bad} are not signed by its roster key")


def return_decryption(st: ClientState) -> ReturnDecryption:
    release = st.data.release
    values = release if release is not None else np.zeros(0, dtype=np.float64)
    return ReturnDecryption(**_head(st), values=values)


# -- BroadcastAggregate ------------------------------------------------------------------
def check_aggregate(st: ClientState, msg: BroadcastAggregate) -> ClientData:
    d: ClientData = st.data
    if d.signed_list is None or tuple(msg.contributors) != d.signed_list[0]:
        raise _refuse(st, "the aggregate names other contributors than the list it signed")
    if msg.weighted_sum.shape != (st.setup.vector.length,) or msg.weighted_sum.dtype != "<f8":
        raise _refuse(st, "malformed aggregate from the aggregator")
    digest = Aggregate(weighted_sum=msg.weighted_sum, total_weight=msg.total_weight).digest()
    return dataclasses.replace(d, aggregate_digest=digest)
