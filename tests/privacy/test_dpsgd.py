"""DP-SGD with noise multiplicity: the clipped sum against explicit per-sample
gradients, the per-sample bound, K copies counted once, noise scale, ledger."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from securediff.errors import BudgetExceededError, ConfigError, PrivacyError
from securediff.privacy.dpsgd import DPSGD, UnsupportedModelError, poisson_sample, validate_for_dp
from securediff.privacy.ledger import DPSGDEvent, PrivacyLedger
from securediff.rng import RandomSource

D, CLASSES, HIDDEN = 6, 3, 8


class Tiny(nn.Module):
    """Linear + label embedding + GroupNorm: the layer kinds of the UNet."""

    def __init__(self, d: int = D) -> None:
        super().__init__()
        self.inp = nn.Linear(d, HIDDEN)
        self.emb = nn.Embedding(CLASSES, HIDDEN)
        self.norm = nn.GroupNorm(2, HIDDEN)
        self.out = nn.Linear(HIDDEN, d)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.out(torch.nn.functional.silu(self.norm(self.inp(x) + self.emb(y))))


def make_model(seed: int, d: int = D) -> Tiny:
    gen = torch.Generator().manual_seed(seed)
    model = Tiny(d)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model


def eps_prediction_loss(noise: torch.Tensor, scale: float = 1.0):
    """Per-copy diffusion-style loss; `noise` holds one draw per copy (B*K rows)."""

    def loss(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return scale * ((module(x + noise, y) - noise) ** 2).sum(dim=1)

    return loss


def make_dpsgd(model: nn.Module, **kw) -> DPSGD:
    defaults = dict(
        max_grad_norm=1.0,
        noise_multiplier=0.0,
        expected_batch_size=1.0,
        source=RandomSource.insecure_from_seed(0),
        ledger=None,
    )
    defaults.update(kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    return DPSGD(model=model, optimizer=opt, **defaults)


def manual_per_sample_grads(
    model: nn.Module, x, y, noise, k: int, scale: float = 1.0
) -> list[list[torch.Tensor]]:
    """Explicit loop: for each sample, the mean over its K copies of the gradient."""
    out = []
    params = list(model.parameters())
    for i in range(x.shape[0]):
        acc = [torch.zeros_like(p) for p in params]
        for j in range(k):
            n = noise[i * k + j : i * k + j + 1]
            loss = scale * ((model(x[i : i + 1] + n, y[i : i + 1]) - n) ** 2).sum()
            for a, g in zip(acc, torch.autograd.grad(loss, params), strict=True):
                a += g / k
        out.append(acc)
    return out


def batch(b: int, k: int, seed: int, scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, D, generator=gen) * scale
    y = torch.randint(0, CLASSES, (b,), generator=gen)
    noise = torch.randn(b * k, D, generator=gen)
    return x, y, noise


def test_clipped_sum_matches_explicit_per_sample_gradients() -> None:
    b, k, clip = 5, 3, 7.0
    model = make_model(1)
    reference = copy.deepcopy(model)
    x, y, noise = batch(b, k, seed=2)
    dp = make_dpsgd(model, max_grad_norm=clip, noise_multiplicity=k, expected_batch_size=2.5)
    norms = dp.step(eps_prediction_loss(noise), x, y)

    grads = manual_per_sample_grads(reference, x, y, noise, k)
    manual_norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in gi)) for gi in grads])
    torch.testing.assert_close(norms, manual_norms, rtol=1e-5, atol=1e-6)
    assert (manual_norms > clip).any() and (manual_norms < clip).any()  # both branches used
    factors = torch.clamp(clip / (manual_norms + 1e-6), max=1.0)
    for idx, p in enumerate(dp.params):
        expected = sum(f * gi[idx] for f, gi in zip(factors, grads, strict=True)) / 2.5
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 4])
def test_each_sample_contributes_at_most_the_clip_norm(k: int) -> None:
    clip = 0.7
    model = make_model(3)
    x, y, noise = batch(6, k, seed=4)
    dp = make_dpsgd(model, max_grad_norm=clip, noise_multiplicity=k)
    for i in range(6):
        sl = slice(i, i + 1)
        loss = eps_prediction_loss(noise[i * k : (i + 1) * k], scale=1e5)  # enormous gradients
        norms = dp.step(loss, x[sl], y[sl])
        assert float(norms[0]) > 1e3 * clip
        total = torch.sqrt(sum((p.grad**2).sum() for p in dp.params))
        assert float(total) <= clip + 1e-5
        assert float(total) == pytest.approx(clip, rel=1e-4)


def test_k_copies_of_one_sample_count_as_one() -> None:
    # Copies with different noise: clipping each copy would allow up to K * C.
    clip, k = 0.5, 8
    model = make_model(5)
    x, y, noise = batch(1, k, seed=6)
    dp = make_dpsgd(model, max_grad_norm=clip, noise_multiplicity=k)
    dp.step(eps_prediction_loss(noise, scale=100.0), x, y)
    total = float(torch.sqrt(sum((p.grad**2).sum() for p in dp.params)))
    assert total <= clip + 1e-5

    # what per-copy clipping would have released: clearly more than C
    reference = make_model(5)
    per_copy = manual_per_sample_grads(reference, x.repeat(k, 1), y.repeat(k), noise, 1, 100.0)
    clipped = [
        [g * min(1.0, clip / float(torch.sqrt(sum((h**2).sum() for h in gi)))) for g in gi]
        for gi in per_copy
    ]
    summed = [sum(gi[j] for gi in clipped) for j in range(len(clipped[0]))]
    assert float(torch.sqrt(sum((s**2).sum() for s in summed))) > 2 * clip


def test_noise_std_and_empty_batch() -> None:
    sigma, clip, ebs = 2.0, 0.5, 4.0
    model = make_model(7, d=40)
    dp = make_dpsgd(
        model,
        max_grad_norm=clip,
        noise_multiplier=sigma,
        expected_batch_size=ebs,
        source=RandomSource.insecure_from_seed(11),
    )

    def never_called(*_args):
        raise AssertionError("an empty batch must not run the model")

    draws = []
    for _ in range(3):
        norms = dp.step(never_called, torch.zeros(0, 40), torch.zeros(0, dtype=torch.long))
        assert norms.shape == (0,)
        draws.append(torch.cat([p.grad.flatten() for p in dp.params]))
    values = torch.cat(draws)
    assert values.numel() > 2000
    assert float(values.std()) == pytest.approx(sigma * clip / ebs, rel=0.05)
    assert abs(float(values.mean())) < 4 * sigma * clip / ebs / values.numel() ** 0.5


def test_noise_comes_from_the_injected_source() -> None:
    def grads(seed: int) -> torch.Tensor:
        model = make_model(0)
        dp = make_dpsgd(model, noise_multiplier=1.0, source=RandomSource.insecure_from_seed(seed))
        x, y, noise = batch(2, 1, seed=1)
        dp.step(eps_prediction_loss(noise), x, y)
        return torch.cat([p.grad.flatten() for p in dp.params])

    torch.testing.assert_close(grads(1), grads(1), rtol=0, atol=0)
    assert not torch.allclose(grads(1), grads(2))


def test_optimizer_step_applies_the_private_gradient() -> None:
    model = make_model(2)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dp = DPSGD(
        model=model,
        optimizer=opt,
        max_grad_norm=1.0,
        noise_multiplier=0.0,
        expected_batch_size=2.0,
        source=RandomSource.insecure_from_seed(0),
        ledger=None,
    )
    x, y, noise = batch(2, 1, seed=3)
    dp.step(eps_prediction_loss(noise), x, y)
    for p0, p in zip(before, dp.params, strict=True):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * p.grad)
        assert getattr(p, "grad_sample", None) is None  # cleared for the next step


def test_ledger_reservation_guards_every_step() -> None:
    ledger = PrivacyLedger(client_id="c", budget_epsilon=3.0, delta=1e-5, accountant="rdp")
    dp = make_dpsgd(make_model(0), noise_multiplier=1.0, ledger=ledger, sample_rate=0.01)
    x, y, noise = batch(1, 1, seed=0)
    loss = eps_prediction_loss(noise)
    with pytest.raises(PrivacyError, match="reserve"):
        dp.step(loss, x, y)
    dp.reserve(2)
    assert ledger.events == (DPSGDEvent(1.0, 0.01, 2, "shared"),)
    dp.step(loss, x, y)
    dp.step(loss, x, y)
    with pytest.raises(PrivacyError):
        dp.step(loss, x, y)
    with pytest.raises(BudgetExceededError):
        dp.reserve(1_000_000)
    assert dp.reserved_steps == 0
    assert ledger.events == (DPSGDEvent(1.0, 0.01, 2, "shared"),)


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="sample_rate"):
        make_dpsgd(
            make_model(0), ledger=PrivacyLedger(client_id="c", budget_epsilon=1.0, delta=1e-5)
        )
    with pytest.raises(ConfigError):
        make_dpsgd(make_model(0), noise_multiplicity=0)
    dp = make_dpsgd(make_model(0), noise_multiplicity=2)
    x, y, noise = batch(2, 2, seed=0)
    with pytest.raises(ConfigError, match="shape"):
        dp.step(lambda m, xx, yy: m(xx, yy).sum(dim=1)[:3], x, y)


def test_validate_for_dp() -> None:
    validate_for_dp(make_model(0))
    bad = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(UnsupportedModelError, match="BatchNorm"):
        validate_for_dp(bad)
    with pytest.raises(ConfigError):
        make_dpsgd(bad)


def test_poisson_sample() -> None:
    src = RandomSource.insecure_from_seed(5)
    idx = poisson_sample(100_000, sample_rate=0.01, source=src)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert abs(idx.size - 1000) < 4 * 1000**0.5
    again = poisson_sample(100_000, sample_rate=0.01, source=RandomSource.insecure_from_seed(5))
    np.testing.assert_array_equal(idx, again)
    assert poisson_sample(10, sample_rate=1.0, source=src).tolist() == list(range(10))
    assert poisson_sample(0, sample_rate=0.5, source=src).size == 0
    sizes = [poisson_sample(3, sample_rate=0.05, source=src).size for _ in range(50)]
    assert 0 in sizes  # empty batches happen and are allowed
    with pytest.raises(ConfigError):
        poisson_sample(10, sample_rate=0.0, source=src)


def test_non_finite_gradients_are_refused() -> None:
    dp = make_dpsgd(make_model(0))
    x, y, noise = batch(2, 1, seed=0)
    with pytest.raises(PrivacyError, match="finite"):
        dp.step(eps_prediction_loss(noise, scale=float("inf")), x, y)


def test_secure_noise_is_the_same_gaussian_from_four_draws() -> None:
    """Opacus' secure_mode recipe: the halved sum of 4 draws, so the std is unchanged
    and each noise value consumes 4 normals of the injected stream."""
    sigma, clip, ebs = 2.0, 0.5, 4.0

    def noise(secure: bool) -> tuple[torch.Tensor, RandomSource]:
        source = RandomSource.insecure_from_seed(11)
        dp = make_dpsgd(make_model(7, d=40), max_grad_norm=clip, noise_multiplier=sigma,
                        expected_batch_size=ebs, source=source, secure_noise=secure)
        draws = []
        for _ in range(3):
            dp.step(lambda *_: None, torch.zeros(0, 40), torch.zeros(0, dtype=torch.long))
            draws.append(torch.cat([p.grad.flatten() for p in dp.params]))
        return torch.cat(draws), source

    plain, _ = noise(False)
    secure, source = noise(True)
    assert float(secure.std()) == pytest.approx(sigma * clip / ebs, rel=0.05)
    assert not torch.allclose(plain, secure)
    # The first secure value is the halved sum of the stream's first 4 normals
    # of the first parameter's shape.
    first = make_dpsgd(make_model(7, d=40)).params[0]
    replay = RandomSource.insecure_from_seed(11)
    four = [replay.normal(tuple(first.shape), dtype=torch.float64) for _ in range(4)]
    expected = (four[0] + four[1] + four[2] + four[3]) / 2 * sigma * clip / ebs
    torch.testing.assert_close(secure[: first.numel()],
                               expected.flatten().to(secure.dtype), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("secure_noise", [False, True])
def test_noise_drawn_during_the_passes_is_the_noise_drawn_after(secure_noise):
    """The worker thread draws the same stream in the same order: prefetching
    changes when the noise is drawn, never its values."""
    from securediff.diffusion.loss import diffusion_loss
    from securediff.diffusion.schedule import make_schedule
    from securediff.models.unet import UNet, UNetSpec

    schedule = make_schedule("linear", T=100)
    finals = []
    for prefetch in (True, False):
        torch.manual_seed(0)
        model = UNet(UNetSpec(base_channels=8, channel_mults=(1, 2)))
        dp = DPSGD(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3), max_grad_norm=1.0,
                   noise_multiplier=1.0, expected_batch_size=8, source=RandomSource.insecure_from_seed(4),
                   ledger=None, prefetch_noise=prefetch, secure_noise=secure_noise)
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            dp.step(lambda m, xb, yb, g=g: diffusion_loss(m, xb, yb, schedule=schedule, start=0, end=100,
                                                          generator=g), x, y)
        dp.close()
        finals.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert torch.equal(finals[0], finals[1])


def test_a_failed_step_reports_its_own_error_with_a_noise_draw_pending():
    """The clipped sum fails while the worker draws the noise: the step waits for
    the draw and raises the clipping's error, not the worker's."""
    model = nn.Sequential(nn.Linear(4, 2))
    dp = DPSGD(model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1), max_grad_norm=1.0,
               noise_multiplier=1.0, expected_batch_size=4, source=RandomSource.insecure_from_seed(1),
               ledger=None)

    def bad_loss(m, xb):
        return m(xb).sum(dim=1) * float("nan")

    with pytest.raises(PrivacyError, match="not finite"):
        dp.step(bad_loss, torch.randn(4, 4))
