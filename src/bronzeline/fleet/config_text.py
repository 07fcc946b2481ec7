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
BLOCKS = ("database", "api")  # the reference file's marked blocks: `# ---- begin <kind> ----` … `end`
_GEOMETRY_LINE = re.compile(r"^[ \t]*geometry:[^\n]*\n", re.MULTILINE)
_BLOCK = re.compile(r"^[ \t]*# ---- begin (\w+) ----\n(.*?)^[ \t]*# ---- end \1 ----\n", re.MULTILINE | re.DOTALL)
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def reference_file_text() -> str:
    """The reference file as shipped: both kinds of blocks, with their markers."""
    return resources.files("bronzeline.fleet").joinpath(REFERENCE_FILE).read_text(encoding="utf-8")


def reference_config_text(postgis: bool = True, *, api: bool = False) -> str:
    """The reference config with one kind of block: the database source and its models (`api=False`),
    or the API and push tables (`api=True`); the other kind and the markers are left out. Without
    PostGIS the source has no geometry columns, so the `geometry:` keys (which name them for verify)
    are dropped."""
    text = select_blocks(reference_file_text(), "api" if api else "database")
    return text if postgis else _GEOMETRY_LINE.sub("", text)


def select_blocks(text: str, keep: str) -> str:
    """`text` with the marked blocks of kind `keep` (unmarked) and without the others."""
    def chosen(match: re.Match[str]) -> str:
        if match.group(1) not in BLOCKS:
            raise ValueError(f"the reference config has an unknown block {match.group(1)!r}")
        return match.group(2) if match.group(1) == keep else ""

    return _BLOCK.sub(chosen, text)


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


def write_demo_config(directory: Path, source_dsn: str | None, warehouse_dsn: str | None, postgis: bool, *,
                      api: bool = False) -> Path:
    """Write `directory`/bronzeline.yml from the reference config's database block (and the fleet's
    models beside it, `directory`/models), or with `api` from its API and push block (no database
    source, no models: they read the database block's tables).

    A DSN given is written in literally; None leaves the reference's ${VAR}, for the caller's
    environment. Literal DSNs are acceptable only because the embedded servers use trust
    authentication on loopback: a DSN carrying a password, or a non-loopback host, is refused
    (docs/design.md: secrets appear only as ${VAR} references). The API block's credentials are
    always ${VAR}s. The blob store lands in `directory`/blob, the push spool in `directory`/spool.
    """
    text = reference_config_text(postgis, api=api)
    for name, dsn in (("source", None if api else source_dsn), ("warehouse", warehouse_dsn)):
        if dsn is not None:
            _check_demo_dsn(name, dsn)
            # A JSON string is a valid YAML double-quoted scalar: any DSN characters survive.
            text = text.replace(f'"${{{name.upper()}_DSN}}"', json.dumps(dsn))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    path.write_text(text, encoding="utf-8")
    if not api:
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
