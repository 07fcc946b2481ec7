"""The command line in process (click's CliRunner): argument, exit-code and message tests without a
subprocess per check. Tests that kill the process or need signals keep using a real subprocess."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from bronzeline.cli import cli

# Variables a user's shell may carry that would change what a test sees.
_CLEARED = ("BRONZELINE_CONFIG", "SOURCE_DSN", "WAREHOUSE_DSN")


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def invoke(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> Result:
    """`bronzeline ARGS` run in `cwd` with exactly `env` on top of a clean environment."""
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PG") or k in _CLEARED}
    runner = CliRunner()
    with contextlib.chdir(cwd):
        result = runner.invoke(cli, list(args), env={**cleared, **(env or {})}, prog_name="bronzeline")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bug: the CLI let an exception through
    return Result(tuple(args), result.exit_code, result.stdout, result.stderr)
