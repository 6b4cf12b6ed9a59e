"""What each strategy shares, and what the shared path may read."""

import numpy as np
import pytest
import torch

from securediff.diffusion.schedule import linear_schedule
from securediff.federation.clients import Client
from securediff.federation.strategies import (
    PFDM,
    DPSGDParams,
    LayerSplit,
    TrainSettings,
)
from securediff.models import UNetSpec
from securediff.privacy.ledger import PrivacyLedger
from securediff.rng import RandomSource

SETTINGS = TrainSettings(batch_size=8, lr=1e-3, label_dropout=0.1, local_steps=2, personal_steps_per_round=2,
                         max_grad_norm=1.0, noise_multiplicity=2, dpsgd_shared=False, dpsgd_personal=False)
SPEC = UNetSpec(base_channels=8)


def _client(n=12):
    src = RandomSource.insecure_from_seed(0)
    return Client(client_id="client-00", index=0, x=torch.rand(n, 1, 8, 8) * 2 - 1, y=torch.arange(n) % 10,
                  ledger=PrivacyLedger(client_id="client-00", budget_epsilon=100, delta=1e-5), source=src)


def _strategy(cls):
    s = cls(spec=SPEC, schedule=linear_schedule(100), t0=40, settings=SETTINGS)
    s.init_global(torch.Generator().manual_seed(0))
    return s


def test_pfdm_shared_update_never_reads_the_raw_images():
    strategy = _strategy(PFDM)
    client = _client()
    strategy.init_client(client, torch.Generator().manual_seed(1))
    client.x_shared = torch.randn_like(client.x)
    client.y_shared = client.y.clone()
    client.x = torch.full_like(client.x, float("nan"))  # any read of the clean images would poison the update
    update = strategy.local_update(client, 0, None)
    assert np.isfinite(update).all() and np.abs(update).sum() > 0
    assert update.shape == strategy.global_vector().shape


def test_pfdm_personal_model_covers_only_t_up_to_t0():
    strategy = _strategy(PFDM)
    client = _client()
    strategy.init_client(client, torch.Generator().manual_seed(1))
    segs = strategy.segments(client)
    assert [(s.start, s.end) for s in segs] == [(40, 100), (0, 40)]
    assert segs[0].model is strategy.global_model and segs[1].model is client.model


def test_layer_split_shares_everything_but_the_personal_layers():
    strategy = _strategy(LayerSplit)
    client = _client()
    strategy.init_client(client, torch.Generator().manual_seed(2))
    personal_before = {n: p.detach().clone() for n, p in client.model.named_parameters()
                       if n.startswith(LayerSplit.rules.personal_layers)}
    assert personal_before, "layer-split must keep some layers personal"
    shared_count = sum(p.numel() for p in strategy.shared_params(client.model))
    assert shared_count == strategy.global_vector().size
    strategy.apply_global(strategy.global_vector() + 1.0)
    strategy.finish_round([client])
    for n, p in client.model.named_parameters():
        if n in personal_before:
            assert torch.equal(p, personal_before[n])  # personal layers are never overwritten


def test_dpsgd_local_update_charges_the_ledger_before_running():
    strategy = _strategy(LayerSplit)
    client = _client(n=16)
    strategy.init_client(client, torch.Generator().manual_seed(3))
    strategy.local_update(client, 0, DPSGDParams(noise_multiplier=1.5, sample_rate=0.5, steps_per_round=2))
    events = client.ledger.events
    assert len(events) == 1 and events[0].steps == SETTINGS.local_steps and events[0].artefact == "shared"
    tight = PrivacyLedger(client_id="client-00", budget_epsilon=1e-3, delta=1e-5)
    client.ledger = tight
    from securediff.errors import BudgetExceededError

    before = strategy.global_vector().copy()
    with pytest.raises(BudgetExceededError):
        strategy.local_update(client, 1, DPSGDParams(noise_multiplier=1.5, sample_rate=0.5, steps_per_round=2))
    assert tight.events == () and np.array_equal(before, strategy.global_vector())


@pytest.mark.parametrize("hybrid_forward", [False, True])
def test_every_registered_strategy_has_a_trainer_built_from_a_plan(hybrid_forward):
    from types import SimpleNamespace

    from securediff.config import Config, FederationConfig
    from securediff.federation.strategies import STRATEGY_CLASSES
    from securediff.strategy_rules import STRATEGY_RULES

    assert set(STRATEGY_CLASSES) == set(STRATEGY_RULES)
    for name, cls in STRATEGY_CLASSES.items():
        forward = hybrid_forward and STRATEGY_RULES[name].forward_option
        setup = SimpleNamespace(config=Config(federation=FederationConfig(strategy=name, hybrid_forward=forward)),
                                partition=SimpleNamespace(num_clients=2))
        strategy = cls.from_setup(setup, spec=SPEC, schedule=linear_schedule(100), t0=40, settings=SETTINGS)
        assert strategy.rules is STRATEGY_RULES[name]
        assert strategy.uses_noised_data is STRATEGY_RULES[name].noises_data(hybrid_forward=forward)


def test_centralized_trains_the_pooled_records_of_every_client_at_the_round_end():
    from securediff.federation.strategies import Centralized

    strategy = Centralized(centralized_steps=4, rounds=2, spec=SPEC, schedule=linear_schedule(100), t0=40,
                           settings=SETTINGS)
    strategy.init_global(torch.Generator().manual_seed(0))
    clients = [_client(n=6), _client(n=4)]
    strategy.attach_clients(clients)
    assert strategy.pooled[0].shape[0] == 10
    before = strategy.global_vector()
    strategy.server_round(0, RandomSource.insecure_from_seed(1))
    assert not np.array_equal(before, strategy.global_vector())
