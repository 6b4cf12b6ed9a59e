"""The strategies built on the statistics release, piece by piece: dpstats fine-tunes
the shared model on draws from the release (t above the hand-off only, nothing on any
ledger) and samples below the hand-off with the model the client chose;
dpstats-gaussian draws from the released class-conditional Gaussians; and the
config refusals of both, each naming its field."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from securediff.config import from_dict
from securediff.diffusion.schedule import linear_schedule
from securediff.errors import ConfigError
from securediff.federation.clients import Client
from securediff.federation.strategies import DPStats, DPStatsGaussian, TrainSettings
from securediff.models import UNetSpec
from securediff.privacy.ledger import PrivacyLedger
from securediff.privacy.stats_decode import ReleasedStats
from securediff.privacy.stats_images import style_of
from securediff.privacy.stats_release import colour_normalised_grey
from securediff.rng import RandomSource

SETTINGS = TrainSettings(batch_size=8, lr=1e-3, label_dropout=0.1, local_steps=2, personal_steps_per_round=2,
                         max_grad_norm=1.0, noise_multiplicity=1, dpsgd_shared=False, dpsgd_personal=False)
SPEC = UNetSpec(in_channels=1, image_size=4, num_classes=3, base_channels=8)
T = 100


def _release(means: np.ndarray, std: float) -> SimpleNamespace:
    """A stored release as the runner attaches it (only `.stats` is read)."""
    d = means.shape[1]
    counts = np.array([5, 0, 7])  # class 1 has no records: never drawn for fine-tuning
    stats = ReleasedStats(sums=means * counts[:, None], means=means, second_moment=np.eye(d),
                          residual_energy=0.0, covariance=std ** 2 * np.eye(d), counts=counts)
    return SimpleNamespace(stats=stats)


def _client(index: int = 0, n: int = 9) -> Client:
    return Client(client_id=f"client-{index:02d}", index=index, x=torch.rand(n, 1, 4, 4) * 2 - 1,
                  y=torch.arange(n) % 3, ledger=PrivacyLedger(client_id=f"client-{index:02d}",
                                                              budget_epsilon=10, delta=1e-5),
                  source=RandomSource.insecure_from_seed(index))


def _dpstats(below: str = "personal") -> DPStats:
    s = DPStats(handoff_t=40, below_handoff=below, finetune_steps=5, rounds=2, public_style=None,
                feature_map="identity", spec=SPEC, schedule=linear_schedule(T), t0=10, settings=SETTINGS)
    s.init_global(torch.Generator().manual_seed(0))
    return s


MEANS = np.stack([np.full(16, -0.5), np.zeros(16), np.linspace(-0.6, 0.6, 16)])


def test_the_fine_tuning_draws_from_the_release_and_trains_only_above_the_hand_off(monkeypatch):
    import securediff.federation.strategies as strategies

    strategy = _dpstats()
    strategy.attach_release(_release(MEANS, 0.05))
    assert [strategy.steps_in_round(r) for r in (0, 1)] == [3, 2]  # 5 steps over 2 rounds
    seen = {}
    real = strategies.train_steps

    def spy(model, optimizer, x, y, **kw):
        seen.update(x=x, y=y, **kw)
        return real(model, optimizer, x, y, **kw)

    monkeypatch.setattr(strategies, "train_steps", spy)
    before = strategy.global_vector().copy()
    client = _client()
    strategy.init_client(client, torch.Generator().manual_seed(1))
    personal = [p.detach().clone() for p in client.model.parameters()]
    strategy.server_round(0, RandomSource.insecure_from_seed(3))
    assert not np.array_equal(before, strategy.global_vector())
    assert (seen["start"], seen["end"], seen["steps"]) == (40, T, 3)
    assert seen["x"].shape == (3 * SETTINGS.batch_size, 1, 4, 4)
    labels = seen["y"].numpy()
    assert set(labels) <= {0, 2}  # in proportion to the public counts: none of the empty class
    for k in (0, 2):  # the draws follow the released class means
        np.testing.assert_allclose(seen["x"].numpy()[labels == k].mean(axis=0).reshape(-1), MEANS[k], atol=0.06)
    # The fine-tuning reads no client's record and charges no ledger.
    assert client.ledger.events == ()
    assert all(torch.equal(a, b) for a, b in zip(personal, client.model.parameters(), strict=True))


@pytest.mark.parametrize("below", ["personal", "shared"])
def test_below_the_hand_off_the_client_samples_what_it_chose(below):
    strategy = _dpstats(below)
    client = _client()
    strategy.init_client(client, torch.Generator().manual_seed(1))
    before = [p.detach().clone() for p in client.model.parameters()]
    strategy.personal_train(client, 0, None)
    trained = not all(torch.equal(a, b) for a, b in zip(before, client.model.parameters(), strict=True))
    assert trained is (below == "personal")
    segments = strategy.segments(client)
    assert [(s.model, s.start, s.end) for s in segments] == [(strategy.global_model, 40, T),
                                                             (client.model, 0, 40)]
    assert client.ledger.events == ()
    assert strategy.release_use() == {"handoff_t": 40, "below_handoff": below, "style_restored": False}


def test_gaussian_samples_have_the_image_shape_and_range_and_follow_the_released_means():
    strategy = DPStatsGaussian(feature_map="identity", spec=SPEC, schedule=linear_schedule(T), t0=10,
                               settings=SETTINGS)
    strategy.attach_release(_release(MEANS, 0.1))
    labels = np.repeat(np.arange(3), 400)
    images = strategy.direct_samples(_client(), labels, generator=torch.Generator().manual_seed(0))
    assert images.shape == (1200, 1, 4, 4) and images.dtype == np.float32
    assert -1.0 <= images.min() and images.max() <= 1.0
    for k in range(3):  # 400 draws of std 0.1: the mean is within 0.02 of the released one
        np.testing.assert_allclose(images[labels == k].mean(axis=0).reshape(-1), MEANS[k], atol=0.02)
        assert images[labels == k].std(axis=0).mean() == pytest.approx(0.1, rel=0.15)
    assert strategy.segments(_client()) == []  # no diffusion model


def test_gaussian_samples_take_the_clients_own_style_under_colour_normalised_grey():
    spec = UNetSpec(in_channels=3, image_size=4, num_classes=3, base_channels=8)
    strategy = DPStatsGaussian(feature_map="colour-normalised-grey", spec=spec, schedule=linear_schedule(T),
                               t0=10, settings=SETTINGS)
    client = _client()
    red = torch.full((9, 3, 4, 4), -1.0)
    red[:, 0] = torch.linspace(-0.9, 0.5, 16).view(4, 4)  # only the red channel lit
    client.x = red
    # The release holds the features of the client's own pattern: each draw is mapped to the
    # image in the client's style whose features it is, here (about) the client's image.
    features = colour_normalised_grey(red[:1].numpy().astype(np.float64))
    strategy.attach_release(_release(np.repeat(features, 3, axis=0), 0.001))
    images = strategy.direct_samples(client, np.repeat(np.arange(3), 50), generator=torch.Generator().manual_seed(0))
    assert images.shape == (150, 3, 4, 4)
    own = style_of(red.numpy(), client.y.numpy(), 3).channel_means
    got = style_of(images, np.repeat(np.arange(3), 50), 3).channel_means
    np.testing.assert_allclose(got, own, atol=0.02)  # dark green and blue, the client's red brightness
    np.testing.assert_allclose(images.mean(axis=0), red[0].numpy(), atol=0.02)
    assert strategy.release_use() == {"style_restored": True}


def test_without_an_attached_release_nothing_is_drawn():
    strategy = _dpstats()
    with pytest.raises(RuntimeError, match="no statistics release attached"):
        strategy.server_round(0, RandomSource.insecure_from_seed(0))


DPSTATS = {"federation": {"strategy": "dpstats"}, "stats": {"release": True},
           "public": {"dataset": "font-digits"}}


def _with(base: dict, **sections) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in sections.items():
        out.setdefault(section, {}).update(values)
    return out


@pytest.mark.parametrize(("raw", "message"), [
    (_with(DPSTATS, stats={"release": False}),
     "stats.release = False is not allowed: true for strategy dpstats (it is built on the feature statistics "
     "release)"),
    ({"federation": {"strategy": "dpstats-gaussian"}},
     "stats.release = False is not allowed: true for strategy dpstats-gaussian (it is built on the feature "
     "statistics release)"),
    (_with(DPSTATS, public={"dataset": ""}, stats={"clip": 3.0}),
     "public.dataset = '' is not allowed: set for strategy dpstats (it starts from the public model)"),
    (_with(DPSTATS, privacy={"dpsgd_shared": True}),
     "privacy.dpsgd_shared = True is not allowed: false for strategy dpstats (no shared training on private "
     "records: what is shared is post-processing of the release)"),
    (_with(DPSTATS, privacy={"dpsgd_personal": True}),
     "privacy.dpsgd_personal = True is not allowed: false for strategy dpstats (not planned)"),
    (_with(DPSTATS, stats={"handoff_t": 1000}),
     "stats.handoff_t = 1000 is not allowed: an integer in [1, T-1] for strategy dpstats (T = 1000)"),
    (_with(DPSTATS, stats={"below_handoff": "public"}),
     "stats.below_handoff = 'public' is not allowed: one of personal, shared"),
    (_with(DPSTATS, stats={"finetune_steps": 0}),
     "stats.finetune_steps = 0 is not allowed: an integer in [1, 1000000]"),
    (_with(DPSTATS, privacy={"labels": "randomized-response"}),
     "privacy.labels = 'randomized-response' is not allowed: public with stats.release (the release's "
     "per-class counts are its labels' counts)"),
    (_with(DPSTATS, privacy={"client_level": True}),
     "privacy.client_level = True is not allowed: true only for strategy pfdm, layer-split or fedavg "
     "(clients must send shared updates; hybrid is already distributed DP)"),
])
def test_the_config_refusals_name_the_field(raw, message):
    with pytest.raises(ConfigError) as refused:
        from_dict(raw)
    assert str(refused.value) == message


def test_a_release_is_refused_for_a_strategy_that_neither_trains_together_nor_uses_it():
    with pytest.raises(ConfigError, match=r"^stats.release = True is not allowed: true only for strategy "
                                          r"pfdm, layer-split, fedavg, hybrid, dpstats or dpstats-gaussian"):
        from_dict({"federation": {"strategy": "local"}, "stats": {"release": True, "clip": 3.0}})
    assert from_dict(DPSTATS).federation.strategy_rules.release_based
