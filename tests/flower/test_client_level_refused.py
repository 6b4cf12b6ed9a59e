"""Client-level DP is not implemented across machines: a node refuses it in one line."""

import pytest

from securediff.config import Config
from securediff.errors import ConfigError
from securediff.flower.plan import check_supported


def test_client_level_is_refused_across_machines():
    config = Config().replace(privacy={"client_level": True}).validate()
    with pytest.raises(ConfigError, match="privacy.client_level runs only in securediff train"):
        check_supported(config)
