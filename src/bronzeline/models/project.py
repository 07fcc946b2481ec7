"""Read a models folder: `models/<schema>/<name>.sql` files and the `*.yml` property files (dbt's
shape), validated once into a `Project`. Every problem is a ConfigError naming its file and key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bronzeline.config.models import Config
from bronzeline.errors import ConfigError
from bronzeline.models.spec import MATERIALIZATIONS, CheckSpec, ColumnSpec, Model, Project, SourceTable

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODEL_KEYS = {"name", "materialized", "key", "incremental", "depends_on", "data_tests", "tests", "columns",
               "description", "config", "meta"}
_CONFIG_KEYS = {"materialized", "key", "unique_key", "incremental", "depends_on"}
_COLUMN_KEYS = {"name", "description", "data_tests", "tests", "meta", "data_type"}
_CHECK_COMMON = {"severity", "mostly", "where", "config", "name"}


def load_project(config: Config) -> Project:
    """The models folder named by `models.path`; an empty project without a `models:` section."""
    root = config.models_dir
    if root is None:
        return Project(Path("."))
    if not root.is_dir():
        raise ConfigError(f"models.path: {root} is not a folder; create it or fix models.path")
    project = Project(root)
    for path in sorted(root.rglob("*.sql")):
        model = _read_model(root, path)
        if model.relation in project.models:
            raise ConfigError(f"{_rel(root, path)}: model {model.relation} is defined twice")
        project.models[model.relation] = model
    keys = {f"{config.warehouse.bronze_schema}.{t.name}": tuple(t.key) for t in config.tables}
    for path in sorted([*root.rglob("*.yml"), *root.rglob("*.yaml")]):
        _apply_properties(project, path, keys)
    return project


def _rel(root: Path, path: Path) -> str:
    return f"{root.name}/{path.relative_to(root)}"


def _read_model(root: Path, path: Path) -> Model:
    parts = path.relative_to(root).parts
    if len(parts) != 2:
        raise ConfigError(f"{_rel(root, path)}: a model lives at {root.name}/<schema>/<name>.sql; move it there")
    schema, name = parts[0], path.stem
    for what, ident in (("schema", schema), ("name", name)):
        if not _IDENT.match(ident):
            raise ConfigError(f"{_rel(root, path)}: the model's {what} {ident!r} must be letters, digits and "
                              "underscores, not starting with a digit")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ConfigError(f"{_rel(root, path)}: the file is empty; a model is one SELECT (or function DDL)")
    return Model(schema=schema, name=name, path=path, sql=text)


def _load_yaml(root: Path, path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{_rel(root, path)}: not valid YAML{where}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_rel(root, path)}: expected a mapping with `models:` and/or `sources:`")
    unknown = sorted(set(data) - {"version", "models", "sources"})
    if unknown:
        raise ConfigError(f"{_rel(root, path)}: unknown key {unknown[0]!r}; a property file has `models:` and "
                          "`sources:`")
    return data


def _apply_properties(project: Project, path: Path, keys: dict[str, tuple[str, ...]]) -> None:
    where = _rel(project.root, path)
    data = _load_yaml(project.root, path)
    for i, entry in enumerate(_list(data.get("models"), f"{where}: models")):
        _apply_model(project, entry, f"{where}: models[{i}]", where)
    for i, entry in enumerate(_list(data.get("sources"), f"{where}: sources")):
        for relation, table in _source_tables(entry, f"{where}: sources[{i}]"):
            checks = _table_checks(table, relation, keys.get(relation, ()), f"{where}: sources[{i}]", where)
            old = project.sources.get(relation)
            project.sources[relation] = SourceTable(relation, (old.checks if old else ()) + checks)


def _list(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: expected a list of mappings")
    return value


def _resolve(project: Project, name: Any, where: str) -> Model:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: `name` is required (schema.name)")
    if name in project.models:
        return project.models[name]
    matches = [m for m in project.models.values() if m.name == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"{where}: {name!r} names models in several schemas; write schema.name")
    raise ConfigError(f"{where}: no model file for {name!r}; expected {project.root.name}/<schema>/<name>.sql")


def _apply_model(project: Project, entry: dict[str, Any], where: str, origin: str) -> None:
    unknown = sorted(set(entry) - _MODEL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    model = _resolve(project, entry.get("name"), where)
    settings = dict(entry)
    nested = entry.get("config") or {}
    if not isinstance(nested, dict) or set(nested) - _CONFIG_KEYS:
        raise ConfigError(f"{where}.config: only {', '.join(sorted(_CONFIG_KEYS))} are read there")
    settings.update({("key" if k == "unique_key" else k): v for k, v in nested.items()})
    materialized = settings.get("materialized", model.materialized)
    if materialized not in MATERIALIZATIONS:
        raise ConfigError(f"{where}: materialized {materialized!r} is not one of {', '.join(MATERIALIZATIONS)}")
    key = _names(settings.get("key", list(model.key)), f"{where}.key")
    incremental = settings.get("incremental") or {}
    if not isinstance(incremental, dict) or set(incremental) - {"watermark"}:
        raise ConfigError(f"{where}.incremental: write {{watermark: <column>}}")
    watermark = incremental.get("watermark", model.watermark)
    if materialized == "incremental" and (not key or not watermark):
        raise ConfigError(f"{where}: an incremental model needs `key:` and `incremental: {{watermark: <column>}}`")
    if materialized == "matview" and not key:
        raise ConfigError(f"{where}: a matview needs `key:` (a unique index lets it refresh without blocking readers)")
    depends = _names(settings.get("depends_on", list(model.depends_on)), f"{where}.depends_on")
    columns = []
    checks = list(model.checks)
    for j, column in enumerate(_list(entry.get("columns"), f"{where}.columns")):
        cwhere = f"{where}.columns[{j}]"
        if set(column) - _COLUMN_KEYS or not isinstance(column.get("name"), str):
            raise ConfigError(f"{cwhere}: a column has `name`, `description` and `data_tests`")
        columns.append(ColumnSpec(column["name"], str(column.get("description") or "")))
        checks += _checks(column.get("data_tests", column.get("tests")), model.relation, column["name"], tuple(key),
                          cwhere, origin)
    checks += _checks(entry.get("data_tests", entry.get("tests")), model.relation, None, tuple(key), where, origin)
    project.models[model.relation] = Model(
        schema=model.schema, name=model.name, path=model.path, sql=model.sql, materialized=materialized,
        key=tuple(key), watermark=watermark, depends_on=tuple(depends), checks=tuple(checks),
        columns=tuple(columns), description=str(entry.get("description") or ""))


def _names(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of names")
    return list(value)


def _source_tables(entry: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    """`{name: bronze.t, columns, data_tests}`, or dbt's `{name, schema, tables: [{name, …}]}`."""
    if "tables" in entry:
        schema = entry.get("schema") or entry.get("name")
        return [(f"{schema}.{t.get('name')}", t) for t in _list(entry["tables"], f"{where}.tables")]
    name = entry.get("name")
    if not isinstance(name, str) or "." not in name:
        raise ConfigError(f"{where}: name the bronze table as schema.name (e.g. bronze.position_history)")
    return [(name, entry)]


def _table_checks(table: dict[str, Any], relation: str, key: tuple[str, ...], where: str,
                  origin: str) -> tuple[CheckSpec, ...]:
    checks: list[CheckSpec] = []
    for j, column in enumerate(_list(table.get("columns"), f"{where}.columns")):
        checks += _checks(column.get("data_tests", column.get("tests")), relation, str(column.get("name")), key,
                          f"{where}.columns[{j}]", origin)
    checks += _checks(table.get("data_tests", table.get("tests")), relation, None, key, where, origin)
    return tuple(checks)


def _checks(value: Any, relation: str, column: str | None, key: tuple[str, ...], where: str,
            origin: str) -> list[CheckSpec]:
    """dbt's forms: `- not_null`, `- accepted_range: {min_value: 0, severity: warn}`, with `config:` too."""
    if value is None:
        return []
    from bronzeline.models.checks import validate_check

    if not isinstance(value, list):
        raise ConfigError(f"{where}.data_tests: expected a list")
    found = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            kind, args = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            kind, raw = next(iter(item.items()))
            args = dict(raw or {})
        else:
            raise ConfigError(f"{where}.data_tests[{i}]: write `- not_null` or `- accepted_range: {{…}}`")
        nested = args.pop("config", None) or {}
        common = {**{k: args.pop(k) for k in list(args) if k in _CHECK_COMMON}, **nested}
        common.pop("name", None)
        spec = CheckSpec(kind=str(kind), relation=relation, column=column, args=args,
                         severity=common.get("severity", "error"), mostly=float(common.get("mostly", 1.0)),
                         where=common.get("where"), key=key, origin=origin)
        problems = validate_check(spec)
        if problems:
            raise ConfigError(f"{where}.data_tests[{i}]: {problems[0]}")
        found.append(spec)
    return found
