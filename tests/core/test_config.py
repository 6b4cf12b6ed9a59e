import pytest

from securediff.config import Config, flag_help, from_dict, parse_flag_overrides
from securediff.errors import ConfigError


def test_defaults_validate_and_round_trip_through_toml():
    import tomllib

    cfg = Config().validate()
    assert from_dict(tomllib.loads(cfg.to_toml())) == cfg
    assert cfg.private


def test_flags_override_and_coerce():
    raw = parse_flag_overrides(["--data.alpha", "0.5", "--model.channel_mults=1,2,2", "--privacy.dpsgd_shared", "true"])
    cfg = from_dict(raw)
    assert cfg.data.alpha == 0.5 and cfg.model.channel_mults == (1, 2, 2) and cfg.privacy.dpsgd_shared is True


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"nope": {}}, "nope"),
        ({"data": {"colour": 1}}, "data.colour"),
        ({"privacy": {"target_epsilon": -1}}, "privacy.target_epsilon"),
        ({"privacy": {"delta": 2}}, "privacy.delta"),
        ({"privacy": {"t0": 1000}}, "privacy.t0"),
        ({"data": {"alpha": 0}}, "data.alpha"),
        ({"data": {"num_clients": "ten"}}, "data.num_clients"),
        ({"data": {"dataset": "mnist-idx", "path": "/does/not/exist"}}, "data.path"),
        ({"federation": {"strategy": "magic"}}, "federation.strategy"),
        ({"diffusion": {"T": 1}}, "diffusion.T"),
        ({"training": {"batch_size": 0}}, "training.batch_size"),
        ({"privacy": {"dpsgd_shared": "maybe"}}, "privacy.dpsgd_shared"),
        ({"privacy": {"dpsgd_personal": True}, "training": {"personal_steps": 0}}, "training.personal_steps"),
    ],
)
def test_bad_values_name_the_field(raw, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_dict(raw)


def test_flag_parse_errors():
    with pytest.raises(ConfigError):
        parse_flag_overrides(["positional"])
    with pytest.raises(ConfigError):
        parse_flag_overrides(["--data.alpha"])


def test_every_key_is_listed_as_a_flag():
    text = flag_help()
    assert "--privacy.t0" in text and "--federation.rounds" in text


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    from securediff.config import load_toml

    path = tmp_path / "run.toml"
    path.write_bytes(b"[data]\nnum_clients = \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_toml(path)
