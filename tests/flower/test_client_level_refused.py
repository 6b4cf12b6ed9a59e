"""What is not implemented across machines is refused by a node in one line (client-level
DP, the statistics release)."""

import pytest

from securediff.config import Config
from securediff.errors import ConfigError
from securediff.flower.agreement import check_supported


def test_client_level_is_refused_across_machines():
    config = Config().replace(privacy={"client_level": True}).validate()
    with pytest.raises(ConfigError, match="privacy.client_level runs only in securediff train"):
        check_supported(config)


def test_the_statistics_release_is_refused_across_machines():
    # A node would otherwise train as if no release had been asked for, uncharged.
    config = Config().replace(stats={"release": True, "clip": 1.0},
                              federation={"protocol": "secagg"},
                              privacy={"accountant": "rdp"}).validate()
    with pytest.raises(ConfigError, match="stats.release runs only in securediff train"):
        check_supported(config)
