"""The README's command and config tables against the code: the click group and the pydantic models.

When one fails after a merge (someone added an option or a config key), its message names exactly
what to add to (or remove from) README.md.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import click
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bronzeline.cli import cli
from bronzeline.config.models import Config

README = Path(__file__).resolve().parents[2] / "README.md"
_CODE = re.compile(r"`([^`]+)`")
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def section(title: str) -> str:
    """The text of `## title` up to the next `## ` heading."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the markdown table whose header row starts with `| header |`."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[first + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


# ------------------------------------------------------------------------------------------ commands


def documented_commands() -> dict[str, str]:
    """command name -> its cell in the README's command table (`run [TABLE…] [-j/--workers N]`)."""
    found: dict[str, str] = {}
    for cells in table_rows(section("Commands"), "command"):
        code = _CODE.findall(cells[0])
        assert code, f"README command table: the row {cells[0]!r} does not start with a `command …` cell"
        found[code[0].split()[0]] = code[0]
    return found


def option_names(command: click.Command) -> set[str]:
    return {name for p in command.params if isinstance(p, click.Option) for name in p.opts + p.secondary_opts}


def test_the_command_table_lists_exactly_the_commands() -> None:
    documented, actual = set(documented_commands()), set(cli.commands)
    missing = sorted(actual - documented)
    extra = sorted(documented - actual)
    assert not missing, f"README.md, ## Commands: add a row for the command(s) {missing}"
    assert not extra, f"README.md, ## Commands: the row(s) {extra} name no command of bronzeline (remove them)"


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_each_command_row_names_exactly_its_options(name: str) -> None:
    cell = documented_commands().get(name)
    if cell is None:
        pytest.skip(f"{name} has no row (reported by the test above)")
    command = cli.commands[name]
    real = option_names(command)
    named = set(_OPTION.findall(cell))
    unknown = sorted(named - real)
    assert not unknown, f"README.md, ## Commands, `{name}`: {unknown} is not an option of `bronzeline {name}`"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert set(param.opts) & named, (f"README.md, ## Commands: the `{name}` row does not show its option "
                                             f"{'/'.join(param.opts)} (add e.g. `[{param.opts[-1]} …]`)")


def test_the_global_options_are_shown() -> None:
    text = section("Commands")
    for param in cli.params:
        if isinstance(param, click.Option) and param.expose_value and param.name != "help":
            assert any(f"[{opt}" in text for opt in param.opts), (
                f"README.md, ## Commands: the usage line does not show the global option {'/'.join(param.opts)}")


# -------------------------------------------------------------------------------------------- config


def _model_in(annotation: Any) -> tuple[str, list[type[BaseModel]]] | None:
    """('', [Model]), ('.<name>', [Model]) or ('[]', [Model]) when a field holds a model, a dict of models or
    a list of models (several models for a union, e.g. the connection types); None for a plain value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "", [annotation]
    if origin is typing.Annotated:
        return _model_in(args[0])
    if origin is dict and len(args) == 2:
        inner = _model_in(args[1])
        return (".<name>", inner[1]) if inner else None
    if origin is list and args:
        inner = _model_in(args[0])
        return ("[]", inner[1]) if inner else None
    if origin in (typing.Union, types.UnionType):
        models = [m for arg in args if (inner := _model_in(arg)) for m in inner[1]]
        return ("", models) if models else None
    return None


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, FieldInfo]:
    """Every leaf key of the config file, as the README writes it: `blob.retention.failed_days`,
    `connections.<name>.dsn`, `tables[].from`."""
    keys: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        if info.exclude:
            continue  # not a config key (e.g. base_dir, where the file lives)
        key = f"{prefix}{info.alias or name}"
        nested = _model_in(info.annotation)
        if nested:
            for inner in reversed(nested[1]):  # the first model's key wins where types share one (`type`)
                keys.update(config_keys(inner, f"{key}{nested[0]}."))
        else:
            keys[key] = info
    return keys


def documented_keys() -> dict[str, str]:
    """key -> its default cell, from the README's config reference (a row may name several keys)."""
    found: dict[str, str] = {}
    for cells in table_rows(section("Config reference"), "key"):
        for key in _CODE.findall(cells[0]):
            found[key] = cells[1]
    return found


def default_text(info: FieldInfo) -> str | None:
    """How the README writes a plain default (`gzip`, `3`, `true`); None when the cell is free text."""
    value = info.default
    if value is PydanticUndefined or value is None:
        return None
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{value:g}`"
    if isinstance(value, str):
        return f"`{value}`"
    return None


def test_the_config_table_lists_every_key_and_nothing_else() -> None:
    keys, documented = config_keys(), documented_keys()
    missing = sorted(set(keys) - set(documented))
    extra = sorted(set(documented) - set(keys))
    assert not missing, "README.md, ## Config reference: add a row for " + ", ".join(
        f"`{k}` (default {keys[k].default!r})" for k in missing)
    assert not extra, f"README.md, ## Config reference: {extra} are not config keys (remove or rename them)"


def test_the_config_table_shows_each_default() -> None:
    wrong = []
    for key, info in config_keys().items():
        cell = documented_keys().get(key)
        if cell is None:
            continue  # reported by the test above
        if info.is_required():
            if "required" not in cell:
                wrong.append(f"`{key}` is required: its default cell should say (required), not {cell!r}")
        elif (want := default_text(info)) is not None and want not in cell:
            wrong.append(f"`{key}` defaults to {want}, the README says {cell!r}")
    assert not wrong, "README.md, ## Config reference: " + "; ".join(wrong)


def test_the_walk_finds_nested_lists_and_aliases() -> None:
    """The walk itself: a check that finds nothing would pass whatever the README says."""
    keys = config_keys()
    assert {"tables[].from", "tables[].query", "connections.<name>.dsn", "blob.retention.processed_days",
            "warehouse.roles.readonly", "retries.attempts"} <= set(keys)
    assert "base_dir" not in keys and "tables[].from_" not in keys and "blob.retention" not in keys
    assert default_text(keys["retries.backoff_seconds"]) == "`2`"
    assert default_text(keys["connections.<name>.require_tls"]) == "`true`"
