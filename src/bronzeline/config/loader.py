"""Find, read, interpolate and validate the config file; every error names the file and key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bronzeline.config.models import Config
from bronzeline.errors import ConfigError
from bronzeline.redact import dsn_password

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def find_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Path:
    """-c PATH, else $BRONZELINE_CONFIG, else ./bronzeline.yml."""
    env = os.environ if env is None else env
    chosen = Path(path) if path else Path(env.get("BRONZELINE_CONFIG") or "bronzeline.yml")
    if not chosen.is_file():
        how = "pass -c PATH" if not path else "check the path"
        raise ConfigError(f"config file {chosen} not found; {how} or set BRONZELINE_CONFIG")
    return chosen


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    file = find_config(path, env)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{file}: {problem}{where}; fix the YAML syntax") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({exc.strerror}); check the path and permissions") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the file must be a mapping with project, connections, blob and tables")
    refuse_literal_secrets(raw, file)
    data = interpolate(raw, env, file, ())
    return validate(data, file)


def refuse_literal_secrets(raw: dict[str, Any], file: Path) -> None:
    """Secrets appear in the file only as ${VAR} references."""
    connections = raw.get("connections")
    for name, conn in (connections.items() if isinstance(connections, dict) else []):
        dsn = conn.get("dsn") if isinstance(conn, dict) else None
        if isinstance(dsn, str) and "${" not in dsn and dsn_password(dsn):
            raise ConfigError(f"{file}: connections.{name}.dsn has a password written in the file; "
                              f"write it as ${{VAR}} (e.g. dsn: \"${{{name.upper()}_DSN}}\") and export the variable")
    for name, conn in (connections.items() if isinstance(connections, dict) else []):
        for key in ("app_secret", "password_md5", "token"):
            value = conn.get(key) if isinstance(conn, dict) else None
            if isinstance(value, str) and value and "${" not in value:
                raise ConfigError(f"{file}: connections.{name}.{key} is written in the file; write it as "
                                  f"${{VAR}} (e.g. {key}: \"${{{name.upper()}_{key.upper()}}}\") and export it")
    blob = raw.get("blob")
    secret = blob.get("secret_access_key") if isinstance(blob, dict) else None
    if isinstance(secret, str) and secret and "${" not in secret:
        raise ConfigError(f"{file}: blob.secret_access_key is written in the file; write it as "
                          "${AWS_SECRET_ACCESS_KEY} (or leave it out to use the AWS environment)")


def interpolate(value: Any, env: Mapping[str, str], file: Path, path: tuple[str | int, ...]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string, naming the key on a missing variable."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, file, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, file, (*path, _item_label(v, i))) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{file}: {key_path(path)} uses ${{{name}}}, which is not set; "
            f"export {name} or write ${{{name}:-default}}"
        )

    return _VAR.sub(substitute, value)


def _item_label(item: Any, index: int) -> str | int:
    """tables[position_history] rather than tables[0], when the item has a name."""
    name = item.get("name") if isinstance(item, dict) else None
    return f"[{name}]" if isinstance(name, str) else index


def key_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("["):
            out += part
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def validate(data: dict[str, Any], file: Path) -> Config:
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, data, file)) from None
    return config.model_copy(update={"base_dir": file.resolve().parent})


def format_validation(exc: ValidationError, data: dict[str, Any], file: Path) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _readable_loc(loc, data)
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key; remove it or check its spelling (see the README's config reference)")
        elif err["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{where}: {msg[:1].lower()}{msg[1:]}")
    head = f"{file}: invalid config" if len(lines) > 1 else f"{file}:"
    return head + ("\n  " if len(lines) > 1 else " ") + "\n  ".join(lines)


def _readable_loc(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """tables[0].watermark -> tables[position_history].watermark, and `from_` -> `from`."""
    parts: list[str | int] = []
    node: Any = data
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            item = node[part]
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(name if isinstance(name, str) else part)
            node = item
            if isinstance(name, str):
                parts[-1] = f"[{name}]"
            continue
        key = "from" if part == "from_" else part
        if len(parts) == 2 and parts[0] == "connections" and isinstance(node, dict) and key not in node:
            continue  # the connection type's tag (postgres, tracksolid…), not a key of the file
        parts.append(key)
        node = node.get(key) if isinstance(node, dict) else None
    return key_path(tuple(parts))
