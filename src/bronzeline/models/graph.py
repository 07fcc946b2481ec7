"""The model graph: references parsed from each model's SQL (sqlglot, PostgreSQL dialect) plus its
`depends_on`, ordered with graphlib. The SQL is only read here, never rewritten: the build runs the
user's own text."""

from __future__ import annotations

import contextlib
import graphlib
import hashlib
import json
import os
from pathlib import Path

from bronzeline.config.models import Config
from bronzeline.errors import ConfigError
from bronzeline.models.spec import Model, Project
from bronzeline.text import first_line

_CACHE_VERSION = "1"  # bump when what `references` returns changes


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bronzeline" / "model-references.json"


def _read_cache() -> dict[str, list[str]]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict[str, list[str]]) -> None:
    """Best effort, atomically: a build that cannot write its cache only parses again next time."""
    path = _cache_file()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(cache), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # no half-written file left behind


def references(model: Model, cache: dict[str, list[str]] | None = None) -> set[str]:
    """`schema.name` of every schema-qualified relation the model's SQL reads (CTEs excluded), or an
    empty set for function models (their dependencies are `depends_on`). With `cache` (SQL digest ->
    references), an unchanged file is not parsed again: parsing is the slow part of a small build."""
    if model.materialized == "function":
        return set()
    digest = f"{_CACHE_VERSION}:{hashlib.sha256(model.sql.encode()).hexdigest()}"
    if cache is not None and digest in cache:
        return set(cache[digest])
    found = _parse_references(model)
    if cache is not None:
        cache[digest] = sorted(found)
    return found


def _parse_references(model: Model) -> set[str]:
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(model.sql, read="postgres") if s is not None]
    except sqlglot.errors.ParseError as exc:
        detail = first_line(str(exc)) or "cannot be parsed"
        raise ConfigError(f"{model.path.name} ({model.relation}): the SQL cannot be parsed: {detail}; fix it (a "
                          "model is one PostgreSQL SELECT)") from None
    if len(statements) != 1:
        raise ConfigError(f"{model.path.name} ({model.relation}): holds {len(statements)} statements; a model is "
                          "one SELECT (use materialized: function for DDL)")
    tree = statements[0]
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    found = set()
    for table in tree.find_all(exp.Table):
        schema = table.db
        if not schema:
            if table.name in ctes or not table.name:
                continue
            continue  # unqualified: a CTE or a set-returning function; models reference schema.name
        found.add(f"{schema}.{table.name}")
    return found


def dependencies(project: Project, config: Config | None = None) -> dict[str, set[str]]:
    """model -> the models and bronze tables it reads. A reference to nothing known (not a model, not a
    bronze table of the config, not a table declared under `sources:`) is a ConfigError naming it."""
    known_tables = set(project.sources)
    if config is not None:
        known_tables |= {f"{config.warehouse.bronze_schema}.{t.name}" for t in config.tables}
    graph: dict[str, set[str]] = {}
    cache = _read_cache()
    size = len(cache)
    for relation, model in project.models.items():
        refs = references(model, cache) | set(model.depends_on)
        refs.discard(relation)
        unknown = sorted(r for r in refs if r not in project.models and r not in known_tables)
        if unknown:
            raise ConfigError(f"{model.path.name} ({relation}): references {unknown[0]}, which is neither a model, "
                              "a bronze table of the config, nor a table listed under `sources:` in the properties")
        graph[relation] = refs
    if len(cache) != size:
        _write_cache(cache)
    return graph


def build_order(project: Project, config: Config | None = None,
                graph: dict[str, set[str]] | None = None) -> list[str]:
    """Models in an order where each comes after everything it reads; a cycle is a ConfigError."""
    graph = graph if graph is not None else dependencies(project, config)
    sorter = graphlib.TopologicalSorter({m: {d for d in deps if d in project.models} for m, deps in graph.items()})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1] if len(exc.args) > 1 else []
        raise ConfigError(f"the models form a cycle: {' -> '.join(cycle)}; break it (a model cannot read itself "
                          "through others)") from None


def upstream(graph: dict[str, set[str]], relation: str) -> set[str]:
    """Everything `relation` reads, directly or through other models."""
    seen: set[str] = set()
    todo = list(graph.get(relation, ()))
    while todo:
        cur = todo.pop()
        if cur not in seen:
            seen.add(cur)
            todo += list(graph.get(cur, ()))
    return seen


def downstream(graph: dict[str, set[str]], relation: str) -> set[str]:
    """Every model that reads `relation`, directly or through other models."""
    return {m for m in graph if relation in upstream(graph, m)}
