"""Privacy: the forward-noise mechanism, DP-SGD, label release, and the ledger
that turns their events into epsilon with a named accountant."""

from securediff.privacy.accountants import (
    ACCOUNTANTS,
    AccountantUnsupportedError,
    calibrate_noise_multiplier,
    compose_epsilon,
    dpsgd_epsilon,
)
from securediff.privacy.dpsgd import DPSGD, UnsupportedModelError, poisson_sample, validate_for_dp
from securediff.privacy.forward import (
    calibrate_clip,
    calibrate_t0,
    continue_forward,
    epsilon_classic,
    epsilon_exact,
    forward_sigma,
    linear_alphas_cumprod,
    noise_once,
)
from securediff.privacy.labels import LabelPolicy, randomized_response
from securediff.privacy.ledger import (
    DistributedSkellamEvent,
    DPSGDEvent,
    ForwardNoiseEvent,
    PrivacyLedger,
    RandomizedResponseEvent,
)

__all__ = [
    "ACCOUNTANTS",
    "DPSGD",
    "AccountantUnsupportedError",
    "DPSGDEvent",
    "DistributedSkellamEvent",
    "ForwardNoiseEvent",
    "LabelPolicy",
    "PrivacyLedger",
    "RandomizedResponseEvent",
    "UnsupportedModelError",
    "calibrate_clip",
    "calibrate_noise_multiplier",
    "calibrate_t0",
    "compose_epsilon",
    "continue_forward",
    "dpsgd_epsilon",
    "epsilon_classic",
    "epsilon_exact",
    "forward_sigma",
    "linear_alphas_cumprod",
    "noise_once",
    "poisson_sample",
    "randomized_response",
    "validate_for_dp",
]
