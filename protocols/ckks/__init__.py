"""CKKS blind aggregation (TenSEAL/SEAL): see `protocols.ckks.protocol` for the round
and docs/ckks_tee.md for the parameters and the consequences of a shared key."""

from protocols.ckks.context import CiphertextError, CkksContext, CkksKeyError
from protocols.ckks.params import CkksParams
from protocols.ckks.protocol import CkksProtocol

__all__ = ["CiphertextError", "CkksContext", "CkksKeyError", "CkksParams", "CkksProtocol"]
