"""What every command group shares: exit codes, error mapping, shared options."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from securediff.errors import (
    BudgetExceededError,
    CheckpointError,
    ConfigError,
    DataError,
    RunDirectoryError,
    RunInterrupted,
    SecureDiffError,
    describe_os_error,
)

# Exit codes (DESIGN.md, CLI conventions).
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_CANNOT_PROCEED = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

console = Console()
err_console = Console(stderr=True)

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else there.")
]


def fail(message: str, code: int) -> NoReturn:
    """Print one clear line on stderr and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def exit_code_for(exc: BaseException) -> int:
    from protocols.errors import ProtocolAbort, ProtocolInputError

    if isinstance(exc, ConfigError | DataError | ProtocolInputError):
        return EXIT_USAGE
    if isinstance(exc, BudgetExceededError | CheckpointError | RunDirectoryError | ProtocolAbort):
        return EXIT_CANNOT_PROCEED
    return EXIT_CANNOT_PROCEED


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn the library's named errors into one line and the exit code of DESIGN.md."""
    from protocols.errors import ProtocolError

    try:
        yield
    except RunInterrupted as exc:
        fail(str(exc), EXIT_INTERRUPTED if exc.by_user else EXIT_CANNOT_PROCEED)
    except (SecureDiffError, ProtocolError) as exc:
        fail(str(exc), exit_code_for(exc))
    # What the OS or the machine refuses, outside any run directory (a run maps its
    # own to RunInterrupted with a resume hint): one line, never a traceback.
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except OSError as exc:
        fail(describe_os_error(exc), EXIT_CANNOT_PROCEED)
    except UnicodeError as exc:
        fail(f"cannot decode input: {exc}", EXIT_CANNOT_PROCEED)
    except MemoryError:
        fail("out of memory", EXIT_CANNOT_PROCEED)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__dict__"):
        return vars(value)
    return str(value)
