"""What both sides of a ckks round take from the protocol object: the CKKS
parameters, the digest every signed statement binds, and the identity keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from protocols.ckks.params import CkksParams
from protocols.ckks.signed import majority
from protocols.hazmat.signing import SIGNATURE_BYTES
from protocols.roster import Identities, Roster
from protocols.stages import RoundSetup


@dataclass(frozen=True)
class Rules:
    ckks: CkksParams
    min_survivors: int
    params_digest: str
    # None only for a protocol not bound to a roster: nothing is signed or checked
    # then, which holds against an honest-but-curious aggregator only.
    identities: Identities | None

    def digest_for(self, setup: RoundSetup) -> str:
        """What a round's signatures bind: the parameters and the run and session the
        round belongs to (`setup.binding`), so nothing signed replays into another run."""
        if not setup.binding:
            return self.params_digest
        return hashlib.sha256(f"{self.params_digest}\n{setup.binding}".encode()).hexdigest()

    @property
    def roster(self) -> Roster | None:
        return self.identities.roster() if self.identities is not None else None

    def threshold(self, participants: int) -> int:
        """The fewest clients a round may go on with: min_survivors, and a majority of
        the participants to sign the contributor list."""
        return max(self.min_survivors, majority(participants))

    def sign(self, party: str, statement: bytes) -> bytes:
        if self.identities is None:
            return b""
        return self.identities.signing_key(party).sign(statement)

    def signature_bytes(self, count: int) -> int:
        """The size of `count` relayed signatures: none when nothing is signed."""
        return SIGNATURE_BYTES * count if self.identities is not None else 0
