"""Help generated from the config schema, an annotated config.toml, one spelling
per option, and --version."""

from __future__ import annotations

import tomllib

import pytest
from typer.testing import CliRunner

import securediff
from cli.app import app
from securediff.config import Config, from_dict
from securediff.config_help import MEANING, SHORT_FLAGS, key_help

cli = CliRunner()


def test_every_config_key_has_a_meaning_and_nothing_else_does():
    keys = {h.key for h in key_help()}
    assert keys == set(MEANING), (keys ^ set(MEANING))
    assert all(h.allowed and h.type for h in key_help())


def test_train_help_gives_type_meaning_allowed_values_and_default_of_every_flag():
    result = cli.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for h in key_help():
        assert f"{h.flag} {h.type}: {h.meaning}" in text, h.key
    assert "--model.channel_mults INT,INT,...:" in text and "Default: 1,2." in text
    assert "(1, 2)" not in text  # Python syntax the flag does not take


def test_config_init_writes_every_key_at_its_default(tmp_path):
    path = tmp_path / "config.toml"
    assert cli.invoke(app, ["config", "init", str(path)]).exit_code == 0
    text = path.read_text()
    assert from_dict(tomllib.loads(text)) == Config()
    assert all(f"# {MEANING[h.key]}" in text for h in key_help())
    again = cli.invoke(app, ["config", "init", str(path)])
    assert again.exit_code == 2 and "exists" in again.output


@pytest.mark.parametrize("key", sorted(SHORT_FLAGS))
def test_a_key_with_a_short_flag_has_one_spelling(key, tmp_path):
    result = cli.invoke(app, ["train", f"--{key}", "1", "--run.out_dir", str(tmp_path)])
    assert result.exit_code == 2 and SHORT_FLAGS[key] in result.output
    assert not any(tmp_path.iterdir())


def test_version():
    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"securediff {securediff.__version__}"
