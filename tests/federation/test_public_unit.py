"""Public pretraining's pieces: the public-only strategy's colour, the statement's
notice, and a default config that uses no public data."""

import numpy as np
import pytest
import torch

from securediff.config import Config
from securediff.data.tint import apply_tint, client_tint
from securediff.diffusion.schedule import linear_schedule
from securediff.errors import ConfigError
from securediff.federation.clients import Client
from securediff.federation.public import public_notice, public_provenance
from securediff.federation.setup import set_up_run
from securediff.federation.strategies import PublicOnly, TrainSettings
from securediff.flower.agreement import check_supported
from securediff.models import UNetSpec
from securediff.privacy.ledger import PrivacyLedger
from securediff.rng import RandomSource
from securediff.statement import privacy_statement

SETTINGS = TrainSettings(batch_size=8, lr=1e-3, label_dropout=0.1, local_steps=2, personal_steps_per_round=2,
                         max_grad_norm=1.0, noise_multiplicity=1, dpsgd_shared=False, dpsgd_personal=False)


def test_public_only_samples_take_the_clients_tint():
    tints = [client_tint(i, 3) for i in range(3)]
    strategy = PublicOnly(spec=UNetSpec(in_channels=3, base_channels=8), schedule=linear_schedule(10), t0=5,
                          settings=SETTINGS, tints=tints)
    client = Client(client_id="client-02", index=2, x=torch.zeros(1, 3, 8, 8), y=torch.zeros(1, dtype=torch.int64),
                    ledger=PrivacyLedger(client_id="client-02", budget_epsilon=1, delta=1e-5),
                    source=RandomSource.insecure_from_seed(0))
    grey = np.random.default_rng(0).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32).repeat(3, axis=1)
    assert np.allclose(strategy.finish_samples(client, grey, np.arange(4)), apply_tint(grey, tints[2]))


def test_the_statement_names_the_public_data_and_a_default_run_has_none():
    setup = set_up_run(Config().replace(public={"dataset": "font-digits", "per_class": 5, "steps": 7}))
    provenance = public_provenance(setup)
    assert provenance["pretraining"]["steps"] == 7 and provenance["size"] == 8
    notice = public_notice(provenance)
    assert notice.startswith("public data: font-digits (fonts Computer Modern, DejaVu Sans")
    assert notice.endswith("used for pretraining; no privacy cost, no guarantee needed")
    statement = privacy_statement(
        strategy="local+public", protocol_secure=False, protocol_name="plain", private=True, delta=1e-5, t0=500,
        clip_norm=10.0, forward_exact=1.0, forward_classic=1.0, shared_epsilon=float("inf"),
        personal_epsilon=float("inf"), accountant="pld", labels="public", label_epsilon=1.0, public=provenance)
    assert notice in statement["notices"]
    assert public_provenance(set_up_run(Config())) is None


def test_flower_refuses_public_pretraining_it_does_not_do():
    with pytest.raises(ConfigError, match="public.dataset"):
        check_supported(Config().replace(public={"dataset": "font-digits"}))
