import math

import numpy as np
import pytest

from securediff.diffusion.schedule import cosine_schedule, linear_schedule, make_schedule
from securediff.errors import ConfigError


def test_linear_schedule_matches_closed_form():
    s = linear_schedule(1000, 1e-4, 0.02)
    assert s.abar[0] == 1.0 and s.betas[0] == 0.0
    betas = np.linspace(1e-4, 0.02, 1000)
    # abar_t = prod_{s<=t} (1 - beta_s), t = 1..T
    assert s.abar[1] == pytest.approx(1 - 1e-4, rel=1e-15)
    assert s.abar[690] == pytest.approx(np.prod(1 - betas[:690]), rel=1e-12)
    assert s.abar[1000] == pytest.approx(math.exp(np.sum(np.log1p(-betas))), rel=1e-12)
    assert s.abar.dtype == np.float64
    assert np.all(np.diff(s.abar) < 0)


def test_forward_sigma_at_paper_t0():
    # sigma^2 = (1 - abar)/abar at t0 = 690: the paper's epsilon ~10.24 rests on it.
    abar = linear_schedule(1000).abar[690]
    sigma = math.sqrt((1 - abar) / abar)
    eps_classic = 2 * 100 / sigma**2 + 10 * math.sqrt(8 * math.log(1e5) / sigma**2)
    assert eps_classic == pytest.approx(10.24, abs=0.01)


def test_cosine_schedule_closed_form():
    s = cosine_schedule(100)
    f = lambda t: math.cos(((t / 100) + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 50, 99):
        assert s.abar[t] == pytest.approx(f(t) / f(0), rel=1e-9)
    assert s.betas.max() <= 0.999


def test_schedule_arrays_are_read_only():
    s = linear_schedule(10)
    with pytest.raises(ValueError):
        s.abar[3] = 0.5


@pytest.mark.parametrize("kwargs", [dict(name="linear", T=1), dict(name="nope", T=10),
                                    dict(name="linear", T=10, beta_start=0.1, beta_end=0.01)])
def test_bad_schedules_raise_config_error(kwargs):
    name = kwargs.pop("name")
    with pytest.raises(ConfigError):
        make_schedule(name, **kwargs)
