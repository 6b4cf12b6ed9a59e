"""`securediff config init`: an annotated config.toml; and the one-spelling rule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import EXIT_USAGE, console, fail, handle_errors
from securediff.errors import ConfigError

config_app = typer.Typer(help="Run configuration files.", no_args_is_help=True)


@config_app.command("init")
def init(
    path: Annotated[Path, typer.Argument(help="File to write (refused if it exists).")] = Path("config.toml"),
) -> None:
    """Write PATH: every config key at its default, each with its meaning and allowed values."""
    from securediff.config_help import annotated_toml
    from securediff.storage import atomic_write_text

    if path.exists():
        fail(f"{path} exists; choose another path or remove it", EXIT_USAGE)
    with handle_errors():
        atomic_write_text(path, annotated_toml())
    console.print(f"wrote {path}; run it with: securediff train --config {path}", highlight=False,
                  soft_wrap=True)


def refuse_twin_spellings(overrides: dict[str, dict[str, Any]]) -> None:
    """One spelling per option: a key with a short flag is given through that flag."""
    from securediff.config_help import SHORT_FLAGS

    for key, flag in SHORT_FLAGS.items():
        section, name = key.split(".")
        if name in overrides.get(section, {}):
            raise ConfigError(f"--{key} is spelled {flag} on the command line "
                              f"(in a config file it stays {key})")
