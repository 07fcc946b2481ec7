"""The config file contract (README.md, config reference): loading, ${VAR} interpolation, errors with key
paths, lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bronzeline.config import find_config, load_config, parse_interval
from bronzeline.errors import ConfigError
from bronzeline.store import LocalStore, open_store

ENV = {"SOURCE_DSN": "host=src.example dbname=ops user=reader", "WAREHOUSE_DSN": "host=wh.example dbname=dwh"}

VALID = """\
project: fleet
timezone: Africa/Nairobi
connections:
  source:    {dsn: "${SOURCE_DSN}"}
  warehouse: {dsn: "${WAREHOUSE_DSN}"}
blob:
  url: "file://./blob"
warehouse:
  connection: warehouse
  bronze_schema: bronze
  control_schema: dwh_control
  roles: {owner: dwh_owner, readonly: dwh_ro}
tables:
  - name: position_history
    source: source
    from: tracksolid.position_history
    mode: incremental
    watermark: recorded_at
    key: [id]
    geometry: [geom]
    on_conflict: nothing
  - name: devices
    source: source
    from: tracksolid.devices
    mode: snapshot
    key: [imei]
schedule:
  cron: "0 5,8,11,14,17,20,23 * * *"
"""

# A minimal config whose tables section is filled in per test.
HEAD = """\
project: fleet
connections:
  source:    {dsn: "host=localhost dbname=src"}
  warehouse: {dsn: "host=localhost dbname=wh"}
blob:
  url: file://./blob
tables:
"""


def write(folder: Path, text: str, name: str = "bronzeline.yml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV if env is None else env)
    return str(info.value)


# ------------------------------------------------------------------------------------------ valid


def test_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), ENV)
    assert config.project == "fleet"
    assert config.timezone == "Africa/Nairobi" and config.tz.key == "Africa/Nairobi"
    assert config.connections["source"].dsn == ENV["SOURCE_DSN"]
    assert config.connections["warehouse"].dsn == ENV["WAREHOUSE_DSN"]
    assert config.warehouse.roles.owner == "dwh_owner" and config.warehouse.roles.readonly == "dwh_ro"
    assert config.schedule.cron == "0 5,8,11,14,17,20,23 * * *"
    assert config.base_dir == tmp_path.resolve()

    ph = config.table("position_history")
    assert ph.from_ == "tracksolid.position_history" and ph.source_relation == ("tracksolid", "position_history")
    assert ph.mode == "incremental" and ph.watermark == "recorded_at" and ph.key == ["id"]
    assert ph.geometry == ["geom"]
    # defaults
    assert ph.geometry_format == "ewkb" and ph.schema_evolution == "none" and ph.lookback is None
    assert config.blob.compression == "gzip"

    devices = config.table("devices")
    assert devices.mode == "snapshot" and devices.watermark is None and devices.key == ["imei"]
    with pytest.raises(ConfigError, match="no table named 'nope'"):
        config.table("nope")


def test_defaults_for_optional_sections(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, HEAD + "  - {name: t, from: t, watermark: w, key: [id]}\n"), {})
    assert config.timezone == "UTC"
    assert config.warehouse.bronze_schema == "bronze" and config.warehouse.control_schema == "dwh_control"
    assert config.warehouse.connection == "warehouse"
    table = config.table("t")
    assert table.source == "source" and table.on_conflict == "nothing" and table.mode == "incremental"
    assert table.source_relation == ("public", "t")


def test_more_keys_are_accepted(tmp_path: Path) -> None:
    text = HEAD.replace("  url: file://./blob\n", "  url: file://./blob\n  compression: none\n"
                        "  retention: {processed_days: 30, failed_days: 90}\n") + (
        "  - name: t\n    from: s.t\n    watermark: w\n    key: [id]\n    lookback: 10 minutes\n"
        "    geometry_format: ewkt\n    schema_evolution: add_columns\n    cron: '*/5 * * * *'\n"
        "    on_conflict: update\n")
    config = load_config(write(tmp_path, text), {})
    table = config.table("t")
    assert table.lookback_interval is not None and table.lookback_interval.total_seconds() == 600
    assert table.geometry_format == "ewkt" and table.schema_evolution == "add_columns"
    assert table.on_conflict == "update" and table.cron == "*/5 * * * *"
    assert config.blob.compression == "none" and config.blob.retention.processed_days == 30


@pytest.mark.parametrize(("text", "seconds"), [("15 minutes", 900), ("2h", 7200), ("30s", 30), ("1 day", 86400),
                                               ("1.5 hours", 5400), (45, 45)])
def test_parse_interval(text: str | int, seconds: float) -> None:
    assert parse_interval(text).total_seconds() == seconds


def test_bad_lookback_is_an_error(tmp_path: Path) -> None:
    text = HEAD + "  - {name: t, from: t, watermark: w, key: [id], lookback: 'a while'}\n"
    message = config_error(write(tmp_path, text))
    assert "tables[t].lookback" in message and "'a while' is not an interval" in message


# ----------------------------------------------------------------------------------- interpolation


def test_interpolation_with_defaults(tmp_path: Path) -> None:
    text = VALID.replace('"${WAREHOUSE_DSN}"', '"host=${WH_HOST:-localhost} port=${WH_PORT:-5432} dbname=dwh"')
    text = text.replace("bronze_schema: bronze", "bronze_schema: ${BRONZE:-bronze_default}")
    config = load_config(write(tmp_path, text), {**ENV, "WH_PORT": "6543"})
    # WH_HOST is unset -> default; WH_PORT is set -> its value; several variables in one string
    assert config.connections["warehouse"].dsn == "host=localhost port=6543 dbname=dwh"
    assert config.warehouse.bronze_schema == "bronze_default"
    # an empty variable counts as unset when there is a default
    config = load_config(tmp_path / "bronzeline.yml", {**ENV, "WH_HOST": "", "BRONZE": "brz"})
    assert config.connections["warehouse"].dsn == "host=localhost port=5432 dbname=dwh"
    assert config.warehouse.bronze_schema == "brz"


def test_interpolation_reads_the_process_environment_by_default(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, VALID)
    monkeypatch.setenv("SOURCE_DSN", "host=from-env dbname=a")
    monkeypatch.setenv("WAREHOUSE_DSN", "host=from-env dbname=b")
    config = load_config(path)
    assert config.connections["source"].dsn == "host=from-env dbname=a"


def test_missing_variable_names_variable_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    message = config_error(path, {"WAREHOUSE_DSN": "host=x"})
    assert "SOURCE_DSN" in message
    assert "connections.source.dsn" in message
    assert str(path) in message
    # an empty value is as good as missing when there is no default
    message = config_error(path, {"SOURCE_DSN": "", "WAREHOUSE_DSN": "host=x"})
    assert "SOURCE_DSN" in message and "connections.source.dsn" in message


def test_missing_variable_inside_a_table_names_list_position(tmp_path: Path) -> None:
    text = HEAD + "  - {name: t, from: '${SRC_TABLE}', watermark: w, key: [id]}\n"
    message = config_error(write(tmp_path, text), {})
    assert "SRC_TABLE" in message
    assert "tables[0].from" in message or "tables[t].from" in message


# ------------------------------------------------------------------------------------------ errors


def test_unknown_key_names_key_and_where_it_stands(tmp_path: Path) -> None:
    text = VALID.replace("    watermark: recorded_at\n", "    watermark: recorded_at\n    wat: 1\n")
    message = config_error(write(tmp_path, text))
    assert "tables[position_history].wat" in message and "unknown key" in message


@pytest.mark.parametrize(("old", "new", "where"), [
    ("project: fleet\n", "project: fleet\nprojekt: x\n", "projekt"),
    ('  url: "file://./blob"\n', '  url: "file://./blob"\n  compresion: none\n', "blob.compresion"),
    ("  bronze_schema: bronze\n", "  bronze_schema: bronze\n  bronz_schema: x\n", "warehouse.bronz_schema"),
    ('  source:    {dsn: "${SOURCE_DSN}"}', '  source:    {dsn: "${SOURCE_DSN}", dns: x}', "connections.source.dns"),
])
def test_unknown_keys_elsewhere(tmp_path: Path, old: str, new: str, where: str) -> None:
    assert old in VALID
    message = config_error(write(tmp_path, VALID.replace(old, new)))
    assert f"{where}: unknown key" in message


@pytest.mark.parametrize("missing", ["watermark", "key"])
def test_incremental_table_needs_watermark_and_key(tmp_path: Path, missing: str) -> None:
    lines = {"watermark": "    watermark: recorded_at\n", "key": "    key: [id]\n"}
    text = VALID.replace(lines[missing], "", 1)
    message = config_error(write(tmp_path, text))
    assert "tables[position_history]" in message
    assert f"incremental tables need `{missing}:`" in message


def test_snapshot_table_takes_no_watermark(tmp_path: Path) -> None:
    text = HEAD + "  - {name: d, from: d, mode: snapshot, watermark: w}\n"
    assert "snapshot tables take no `watermark:`" in config_error(write(tmp_path, text))


def test_both_from_and_query_is_an_error(tmp_path: Path) -> None:
    text = VALID.replace("    from: tracksolid.devices\n",
                         "    from: tracksolid.devices\n    query: SELECT * FROM tracksolid.devices\n")
    message = config_error(write(tmp_path, text))
    assert "tables[devices]" in message and "exactly one of" in message


def test_neither_from_nor_query_is_an_error(tmp_path: Path) -> None:
    text = VALID.replace("    from: tracksolid.devices\n", "")
    message = config_error(write(tmp_path, text))
    assert "tables[devices]" in message and "exactly one of" in message


def test_unknown_timezone(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, VALID.replace("Africa/Nairobi", "Mars/Olympus_Mons")))
    assert "timezone" in message and "Mars/Olympus_Mons" in message and "unknown time zone" in message


def test_bad_enum_value_names_the_key(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, VALID.replace("mode: snapshot", "mode: snapshots")))
    assert "tables[devices].mode" in message


def test_dangling_references(tmp_path: Path) -> None:
    text = VALID.replace("    source: source\n    from: tracksolid.devices",
                         "    source: crm\n    from: tracksolid.devices")
    assert "source 'crm' is not under connections" in config_error(write(tmp_path, text))
    text = VALID.replace("  connection: warehouse", "  connection: dwh")
    assert "'dwh'" in config_error(write(tmp_path, text))
    text = VALID.replace("  - name: devices", "  - name: position_history")
    assert "listed twice" in config_error(write(tmp_path, text))


def test_several_problems_are_all_listed(tmp_path: Path) -> None:
    text = VALID.replace("project: fleet\n", "project: fleet\nextra1: 1\n").replace(
        "Africa/Nairobi", "Nowhere/Land")
    message = config_error(write(tmp_path, text))
    assert "extra1" in message and "Nowhere/Land" in message


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    text = "project: fleet\nconnections:\n  source: {dsn: 'x'\nblob:\n  url: file://./b\n"
    message = config_error(write(tmp_path, text))
    assert "line " in message and "YAML" in message
    line = int(message.split("line ", 1)[1].split(",")[0])
    assert 3 <= line <= 4  # the unclosed mapping opens on line 3 and is found broken on line 4


def test_yaml_bad_indentation_line(tmp_path: Path) -> None:
    text = "project: fleet\nblob:\n  url: file://./b\n   compression: none\n"
    message = config_error(write(tmp_path, text))
    assert "line 4" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in config_error(write(tmp_path, "- just\n- a list\n"))
    assert "must be a mapping" in config_error(write(tmp_path, ""))


# ------------------------------------------------------------------------------------- blob paths


def test_relative_blob_path_is_relative_to_the_config_folder(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc" / "bronzeline"
    path = write(folder, VALID)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(path, elsewhere), ENV)
    store = open_store(config.blob, config.base_dir, config.project)
    assert isinstance(store, LocalStore)
    with store.open_write("exports/t/x.csv") as handle:
        handle.write(b"1\n")
    assert (folder / "blob" / "fleet" / "exports" / "t" / "x.csv").read_bytes() == b"1\n"
    assert not (elsewhere / "blob").exists()


def test_absolute_blob_path(tmp_path: Path) -> None:
    target = tmp_path / "abs"
    path = write(tmp_path / "cfg", VALID.replace('"file://./blob"', f'"file://{target}"'))
    config = load_config(path, ENV)
    store = open_store(config.blob, config.base_dir, config.project)
    with store.open_write("k") as handle:
        handle.write(b"x")
    assert (target / "fleet" / "k").read_bytes() == b"x"


def test_blob_url_needs_a_scheme(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, VALID.replace('"file://./blob"', '"./blob"')))
    assert "blob.url" in message


def test_unsupported_blob_scheme(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID.replace('"file://./blob"', '"ftp://host/blob"')), ENV)
    with pytest.raises(ConfigError, match="ftp://"):
        open_store(config.blob, config.base_dir, config.project)


# ---------------------------------------------------------------------------------- config lookup


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(tmp_path / "a", VALID, "explicit.yml")
    from_env = write(tmp_path / "b", VALID, "env.yml")
    cwd = tmp_path / "c"
    local = write(cwd, VALID)
    monkeypatch.chdir(cwd)

    # -c wins over $BRONZELINE_CONFIG and ./bronzeline.yml
    assert find_config(explicit, {"BRONZELINE_CONFIG": str(from_env)}) == explicit
    # then $BRONZELINE_CONFIG
    assert find_config(None, {"BRONZELINE_CONFIG": str(from_env)}) == from_env
    # then ./bronzeline.yml
    assert find_config(None, {}).resolve() == local.resolve()
    # an empty BRONZELINE_CONFIG counts as unset
    assert find_config(None, {"BRONZELINE_CONFIG": ""}).resolve() == local.resolve()
    # load_config follows the same order: base_dir is the folder of the file it chose
    assert load_config(None, {**ENV, "BRONZELINE_CONFIG": str(from_env)}).base_dir == from_env.parent.resolve()
    assert load_config(None, ENV).base_dir == cwd.resolve()


def test_lookup_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./bronzeline.yml here
    with pytest.raises(ConfigError, match="not found"):
        find_config(None, {})
    with pytest.raises(ConfigError, match=r"missing\.yml"):
        find_config(tmp_path / "missing.yml", {})
    with pytest.raises(ConfigError, match=r"gone\.yml"):
        find_config(None, {"BRONZELINE_CONFIG": str(tmp_path / "gone.yml")})
    # -c naming a missing file does not fall back to $BRONZELINE_CONFIG
    other = write(tmp_path, VALID, "other.yml")
    with pytest.raises(ConfigError):
        find_config(tmp_path / "missing.yml", {"BRONZELINE_CONFIG": str(other)})


def test_secrets_lists_dsn_passwords(tmp_path: Path) -> None:
    env = {"SOURCE_DSN": "host=a dbname=b user=c password=s3cr3t-src",
           "WAREHOUSE_DSN": "postgresql://own:s3cr3t-wh@wh.example/dwh"}
    config = load_config(write(tmp_path, VALID), env)
    assert set(config.secrets()) == {"s3cr3t-src", "s3cr3t-wh"}


def test_a_password_written_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bronzeline.yml"
    path.write_text("project: p\nconnections:\n  source: {dsn: 'host=db password=hunter22'}\n"
                    "  warehouse: {dsn: '${W}'}\nblob: {url: 'file://./b'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {"W": "host=x"})
    assert "connections.source.dsn" in str(err.value) and "${VAR}" in str(err.value)
    assert "hunter22" not in str(err.value)


def test_cron_needs_five_fields(tmp_path: Path) -> None:
    path = tmp_path / "bronzeline.yml"
    path.write_text("project: p\nconnections:\n  w: {dsn: 'host=x'}\nwarehouse: {connection: w}\n"
                    "blob: {url: 'file://./b'}\nschedule: {cron: '0 5 *'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "schedule.cron" in str(err.value) and "five fields" in str(err.value)


def test_a_missing_variable_in_a_table_names_the_table(tmp_path: Path) -> None:
    path = tmp_path / "bronzeline.yml"
    path.write_text("project: p\nconnections:\n  w: {dsn: 'host=x'}\nwarehouse: {connection: w}\n"
                    "blob: {url: 'file://./b'}\ntables:\n  - name: trips\n    source: w\n"
                    "    query: 'SELECT * FROM ${SCHEMA}.trips'\n    watermark: r\n    key: [id]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "tables[trips].query uses ${SCHEMA}" in str(err.value)
