"""The reference bronzeline.yml (fleet/reference.yml) and the demo's concrete copy of it."""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

REFERENCE_FILE = "reference.yml"
MODELS_FOLDER = "models"  # the reference config's `models.path`, beside the config file
CONFIG_NAME = "bronzeline.yml"
_GEOMETRY_LINE = re.compile(r"^[ \t]*geometry:[^\n]*\n", re.MULTILINE)
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def reference_config_text(postgis: bool = True) -> str:
    """The reference config; without PostGIS the source has no geometry columns, so the
    `geometry:` keys (which name them for verify) are dropped."""
    text = resources.files("bronzeline.fleet").joinpath(REFERENCE_FILE).read_text(encoding="utf-8")
    return text if postgis else _GEOMETRY_LINE.sub("", text)


def shipped_models_dir() -> Path:
    """The fleet's silver/gold/reporting models as the package ships them (bronzeline/fleet/models)."""
    return Path(str(resources.files("bronzeline.fleet").joinpath(MODELS_FOLDER)))


def copy_models(directory: Path) -> Path:
    """Copy the shipped models to `directory`/models (what the reference config's `models.path` names),
    replacing the files of the same name, so that a user can read and edit them there."""
    target = directory / MODELS_FOLDER
    shutil.copytree(shipped_models_dir(), target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def write_demo_config(directory: Path, source_dsn: str, warehouse_dsn: str, postgis: bool) -> Path:
    """Write `directory`/bronzeline.yml with the demo's DSNs written in literally, and the fleet's
    models beside it (`directory`/models).

    Literal DSNs are acceptable only because the embedded servers use trust authentication on
    loopback: a DSN carrying a password, or a non-loopback host, is refused (docs/design.md: secrets
    appear only as ${VAR} references). The blob store lands in `directory`/blob.
    """
    for name, dsn in (("source", source_dsn), ("warehouse", warehouse_dsn)):
        _check_demo_dsn(name, dsn)
    text = reference_config_text(postgis)
    # A JSON string is a valid YAML double-quoted scalar: any DSN characters survive.
    text = text.replace('"${SOURCE_DSN}"', json.dumps(source_dsn))
    text = text.replace('"${WAREHOUSE_DSN}"', json.dumps(warehouse_dsn))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    path.write_text(text, encoding="utf-8")
    copy_models(directory)
    return path


def _check_demo_dsn(name: str, dsn: str) -> None:
    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:
        raise ValueError(f"demo {name} DSN is not a valid connection string: {exc}") from None
    if params.get("password"):
        raise ValueError(f"demo {name} DSN carries a password; use ${{VAR}} references in a real config")
    host = str(params.get("host") or "")
    if host and host not in _LOOPBACK and not host.startswith("/"):
        raise ValueError(f"demo {name} DSN must point at a loopback server, not {host!r}")
