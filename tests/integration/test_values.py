"""Exact values (docs/design.md, "No lost rows"): awkward values round-trip byte for byte through `bronzeline run`."""

from __future__ import annotations

import gzip
import math
import time
from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from tests.integration.pipeline import Pipeline, table_digest

# ------------------------------------------------------------------------------------------- values

TEXTS: list[str | None] = [
    None, "", "NULL", "null", "\\N", "\\.", "a\n\\.\nb", '"', '""', "'", "''", ",", "a,b", ",,,",
    '"a","b"', "\n", "line1\nline2", "\r", "\r\n", "a\rb", "\t", "tab\there", "\\", "\\\\", "back\\slash\\n",
    "emoji 😀🚚👩‍👩‍👧", "שלום עולם", "مرحبا بالعالم", "e\u0301 combining", "\u200f\u202eRTL override",
    "\ufeffBOM", " leading and trailing ", " ", "x" * 20_000, "ünïcödé ñ 中文 日本語",
]

# SQL expressions per column, cycled over the rows.
VALUES: dict[str, list[str]] = {
    "ts": ["'2024-03-10 02:30:00.123456+05:45'", "'1999-12-31 23:59:59.999999-08'",
           "'1900-01-01 00:00:00.000001 Africa/Nairobi'", "'2024-10-27 02:30:00.000001 Europe/Berlin'",
           "'2024-01-01 00:00:00.000001+14'", "'0044-03-15 12:00:00+00 BC'", "'infinity'", "'-infinity'",
           "NULL", "'2038-01-19 03:14:08.5+00'"],
    "tsn": ["'2024-02-29 12:00:00.000001'", "'1970-01-01 00:00:00'", "'4713-01-01 00:00:00 BC'",
            "'294276-12-31 23:59:59.999999'", "'infinity'", "NULL"],
    "d": ["'2024-02-29'", "'0001-01-01 BC'", "'5874897-12-31'", "'-infinity'", "NULL"],
    "tm": ["'00:00:00'", "'23:59:59.999999'", "'24:00:00'", "'12:34:56.000001'", "NULL"],
    "ttz": ["'12:00:00.5+05:30'", "'00:00:00-14:59'", "'23:59:59.999999+00'", "NULL"],
    "iv": ["'1 year 2 mons 3 days 04:05:06.789012'", "'-1 days +02:00:00'", "'0'", "'1 mon -1 days'",
           "'-178000000 years'", "'00:00:00.000001'", "NULL"],
    "n4": ["12345678.1234", "0", "-0.0001", "-99999999.9999", "1.5", "NULL"],
    "n": ["12345678901234567890.123456789", "99999999999999999999", "1.500", "0.00000000000000000001", "'NaN'",
          "'Infinity'", "'-Infinity'", "-0.0", "NULL"],
    "f8": ["1e-308", "'NaN'", "'Infinity'", "'-Infinity'", "'-0'", "1.7976931348623157e308", "5e-324", "0.1",
           "2.2250738585072014e-308", "(1.0/3)::float8", "NULL"],
    "f4": ["3.4028235e38", "1.17549435e-38", "1e-45", "'NaN'", "'-Infinity'", "'-0'", "0.1", "NULL"],
    "i2": ["-32768", "32767", "0", "NULL"],
    "i8": ["-9223372036854775808", "9223372036854775807", "0", "NULL"],
    "gp": ["'SRID=4326;POINT(36.821946 -1.292066)'", "'SRID=4326;POINT(0.1 0.2)'",
           "ST_SetSRID(ST_MakePoint(1.0000000000000002, -179.99999999999997), 4326)", "NULL",
           "'SRID=4326;POINT(-0.000000000000001 89.99999999999999)'"],
    "gl": ["'SRID=32737;LINESTRING(257000.123456789 9857000.987654321,257100 9857100)'", "NULL",
           "'SRID=32737;LINESTRING(0 0,1e-9 1e9,3 4)'"],
    "j": ["'{\"a\": [1, 2, {\"b\": null}],  \"u\": \"\\u00e9\\ud83d\\ude00\", \"dup\": 1, \"dup\": 2}'",
          "'null'", "'[]'", "'\"with \\\\ backslash, \\\"quote\\\" and \\n newline\"'", "'{\"nul\": \"\\u0000\"}'",
          "NULL", "'  { \"spaces\" :  true }  '"],
    "jb": ["'{\"nested\": {\"deep\": [1, 2.50, {\"x\": \"\\u00e9\\ud83d\\ude00\"}]}, "
           "\"big\": 12345678901234567890.1234567890}'",
           "'null'", "'[]'", "'\"\\u00e9 \\\"q\\\" \\\\\"'", "NULL", "'{\"a\": {\"b\": {\"c\": [[], {}, \"\"]}}}'"],
    "ta": ["ARRAY['a', 'b,c', NULL, '', 'NULL', 'with \"quote\"', E'back\\\\slash', E'new\\nline', '{braces}', "
           "' space ']",
           "'{}'::text[]", "NULL", "ARRAY[NULL]::text[]", "'{{a,b},{c,d}}'::text[]"],
    "ia": ["ARRAY[1, NULL, 3]", "'{}'::int[]", "NULL", "'{{1,2},{3,4}}'::int[]", "'[0:1]={7,8}'::int[]",
           "ARRAY[-2147483648, 2147483647]"],
    "b": ["'\\x00ff00'::bytea", "''::bytea", "decode(repeat('00', 1000), 'hex')", "'\\x5c4e0a0d2c22'::bytea",
          "NULL"],
    "bo": ["true", "false", "NULL"],
    "u": ["'00000000-0000-0000-0000-000000000000'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "gen_random_uuid()",
          "NULL"],
    "e": ["'happy'", "'with space, and comma'", "'ünï \"q\"'", "NULL"],
    "dm": ["12.34", "0.00", "99999999.99", "NULL"],
    "de": ["'sad'", "NULL", "'with space, and comma'"],
    "tg": ["ARRAY['x', NULL, 'y,z']", "'{}'", "NULL"],
}

AWKWARD = """
CREATE TYPE tracksolid.mood AS ENUM ('happy', 'sad', 'with space, and comma', 'ünï "q"');
CREATE DOMAIN tracksolid.amount AS numeric(10,2) CHECK (VALUE >= 0);
CREATE DOMAIN tracksolid.mood_d AS tracksolid.mood;
CREATE DOMAIN tracksolid.tags AS text[];
CREATE TABLE tracksolid.awkward (
    id int PRIMARY KEY,
    t text,
    ts timestamptz, tsn timestamp, d date, tm time, ttz timetz, iv interval,
    n4 numeric(12,4), n numeric,
    f8 double precision, f4 real,
    i2 smallint, i8 bigint,
    gp geometry(Point, 4326), gl geometry(LineString, 32737),
    j json, jb jsonb,
    ta text[], ia int[],
    b bytea, bo boolean, u uuid,
    e tracksolid.mood, dm tracksolid.amount, de tracksolid.mood_d, tg tracksolid.tags,
    recorded_at timestamptz NOT NULL DEFAULT now());
"""

AWKWARD_TABLE = """\
  - name: awkward
    from: tracksolid.awkward
    watermark: recorded_at
    key: [id]
    geometry: [gp, gl]
"""

COLUMNS = ["t", *VALUES]
N_ROWS = max(len(TEXTS), *(len(v) for v in VALUES.values()))


def fill_awkward(conn: Any) -> None:
    conn.execute(AWKWARD)
    for i in range(N_ROWS):
        exprs = [sql.SQL(VALUES[c][i % len(VALUES[c])]) for c in VALUES]
        conn.execute(
            sql.SQL("INSERT INTO tracksolid.awkward (id, t, {}) VALUES (%s, %s, {})").format(
                sql.SQL(", ").join(map(sql.Identifier, VALUES)), sql.SQL(", ").join(exprs)),
            (i + 1, TEXTS[i % len(TEXTS)]))


def as_text(conn: Any, relation: str, columns: list[str]) -> list[tuple[Any, ...]]:
    schema, name = relation.split(".")
    query = sql.SQL("SELECT id, {} FROM {} ORDER BY id").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
        sql.Identifier(schema, name))
    return list(conn.execute(query).fetchall())


TYPED = ("SELECT id, t, n4, n, f8, f4, i2, i8, ST_AsEWKB(gp), ST_AsEWKB(gl), ST_SRID(gp), ST_SRID(gl), jb, ta, "
         "b, bo, u, e::text, dm, extract(epoch FROM ts), extract(epoch FROM tsn), ttz "
         "FROM {} ORDER BY id")


def same(a: Any, b: Any) -> bool:
    """Equality that holds NaN equal to NaN and tells -0.0 from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        if a.is_nan() or b.is_nan():
            return a.is_nan() and b.is_nan()
        return a == b and str(a) == str(b)  # str keeps the scale: 1.500 is not 1.5
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def assert_rows_equal(source: list[tuple[Any, ...]], bronze: list[tuple[Any, ...]], names: list[str]) -> None:
    assert len(source) == len(bronze)
    for srow, brow in zip(source, bronze, strict=True):
        for name, s, b in zip(names, srow, brow, strict=True):
            assert same(s, b), f"row id={srow[0]} column {name}: source {s!r} != bronze {b!r}"


def test_awkward_values_round_trip_exactly(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        fill_awkward(conn)
    pipeline.write_config(AWKWARD_TABLE)
    pipeline.cli("migrate", check=True)
    time.sleep(0.15)  # the bound is held 100 ms below the source clock
    out = pipeline.cli("run", check=True).stdout
    assert f"awkward: loaded {N_ROWS} of {N_ROWS} rows" in out

    with pipeline.src() as s, pipeline.wh() as w:
        # the bronze types: enums as text, domains as their base type, typmods kept
        types = dict(w.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = 'bronze.awkward'::regclass AND a.attnum > 0 AND NOT a.attisdropped").fetchall())
        assert types["e"] == "text" and types["dm"] == "numeric(10,2)"
        assert types["de"] == "text" and types["tg"] == "text[]"  # a domain over an enum, over an array
        assert types["gp"] == "geometry(Point,4326)" and types["gl"] == "geometry(LineString,32737)"
        assert types["n4"] == "numeric(12,4)" and types["n"] == "numeric"
        assert types["ts"] == "timestamp with time zone" and types["tsn"] == "timestamp without time zone"
        assert types["ta"] == "text[]" and types["ia"] == "integer[]" and types["ttz"] == "time with time zone"

        # whole-table parity
        assert table_digest(s, "tracksolid.awkward") == table_digest(w, "bronze.awkward")
        # row by row, column by column, as PostgreSQL prints them
        assert_rows_equal(as_text(s, "tracksolid.awkward", COLUMNS), as_text(w, "bronze.awkward", COLUMNS),
                          ["id", *COLUMNS])
        # row by row as typed values: EWKB bytes, NaN, -0.0, numeric scale, epoch to the microsecond
        names = ["id", "t", "n4", "n", "f8", "f4", "i2", "i8", "gp_ewkb", "gl_ewkb", "gp_srid", "gl_srid", "jb",
                 "ta", "b", "bo", "u", "e", "dm", "ts_epoch", "tsn_epoch", "ttz"]
        src_rows = s.execute(sql.SQL(TYPED).format(sql.Identifier("tracksolid", "awkward"))).fetchall()
        brz_rows = w.execute(sql.SQL(TYPED).format(sql.Identifier("bronze", "awkward"))).fetchall()
        assert_rows_equal(src_rows, brz_rows, names)

        # spot checks on bronze alone, against values written above
        def one(query: str) -> Any:
            row = w.execute(query).fetchone()
            assert row is not None
            return row[0]

        texts = [r[0] for r in w.execute("SELECT t FROM bronze.awkward ORDER BY id").fetchall()]
        assert texts[: len(TEXTS)] == TEXTS  # NULL stays NULL, '' stays '', 'NULL' and '\N' stay text
        assert one("SELECT count(*) FROM bronze.awkward WHERE t IS NULL") == \
            sum(1 for i in range(N_ROWS) if TEXTS[i % len(TEXTS)] is None)
        assert one("SELECT count(*) FROM bronze.awkward WHERE t = ''") >= 1
        assert one("SELECT ts::text FROM bronze.awkward WHERE ts = '2024-03-10 02:30:00.123456+05:45'") is not None
        assert one("SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM bronze.awkward "
                   "WHERE id = 1") == "2024-03-09 20:45:00.123456"
        assert one("SELECT tsn::text FROM bronze.awkward WHERE id = 1") == "2024-02-29 12:00:00.000001"
        assert one("SELECT n4::text FROM bronze.awkward WHERE id = 2") == "0.0000"
        assert one("SELECT n::text FROM bronze.awkward WHERE id = 3") == "1.500"
        assert one("SELECT n::text FROM bronze.awkward WHERE id = 1") == "12345678901234567890.123456789"
        assert one("SELECT count(*) FROM bronze.awkward WHERE f8 = 1e-308") >= 1
        assert one("SELECT count(*) FROM bronze.awkward WHERE f8 = 'NaN'") >= 1
        neg_zero = one("SELECT f8 FROM bronze.awkward WHERE id = 5")
        assert neg_zero == 0.0 and math.copysign(1.0, neg_zero) == -1.0
        assert one("SELECT i8 FROM bronze.awkward WHERE id = 1") == -9223372036854775808
        assert one("SELECT ST_AsEWKT(gp) FROM bronze.awkward WHERE id = 1") == "SRID=4326;POINT(36.821946 -1.292066)"
        assert one("SELECT ST_SRID(gl) FROM bronze.awkward WHERE id = 1") == 32737
        assert one("SELECT count(*) FROM bronze.awkward WHERE gp IS NULL") == \
            sum(1 for i in range(N_ROWS) if VALUES["gp"][i % len(VALUES["gp"])] == "NULL")
        assert one("SELECT b FROM bronze.awkward WHERE id = 1") == b"\x00\xff\x00"
        assert one("SELECT b FROM bronze.awkward WHERE id = 2") == b""
        assert one("SELECT b FROM bronze.awkward WHERE id = 3") == bytes(1000)
        assert one("SELECT j::text FROM bronze.awkward WHERE id = 5") == '{"nul": "\\u0000"}'
        assert one("SELECT j IS NULL FROM bronze.awkward WHERE id = 2") is False  # JSON null is not SQL NULL
        assert one("SELECT ta FROM bronze.awkward WHERE id = 1") == \
            ["a", "b,c", None, "", "NULL", 'with "quote"', "back\\slash", "new\nline", "{braces}", " space "]
        assert one("SELECT ta FROM bronze.awkward WHERE id = 2") == []
        assert one("SELECT ia::text FROM bronze.awkward WHERE id = 5") == "[0:1]={7,8}"
        assert one("SELECT bo FROM bronze.awkward WHERE id = 3") is None
        assert one("SELECT e FROM bronze.awkward WHERE id = 2") == "with space, and comma"
        assert one("SELECT dm FROM bronze.awkward WHERE id = 2") == Decimal("0.00")
        assert one("SELECT de FROM bronze.awkward WHERE id = 1") == "sad"
        assert one("SELECT tg FROM bronze.awkward WHERE id = 1") == ["x", None, "y,z"]


ENUM_ARRAY = """
CREATE TYPE tracksolid.colour AS ENUM ('red', 'green', 'with space');
CREATE TABLE tracksolid.paints (
    id int PRIMARY KEY, colours tracksolid.colour[], recorded_at timestamptz NOT NULL DEFAULT now());
INSERT INTO tracksolid.paints (id, colours) VALUES
    (1, '{red,green}'), (2, '{}'), (3, NULL), (4, ARRAY['with space', NULL]::tracksolid.colour[]);
"""


def test_enum_array_lands_as_text_array(pipeline: Pipeline) -> None:
    """Enums land as text (docs/design.md), so an array of enums lands as text[]: the warehouse has no
    copy of the source's enum type."""
    with pipeline.src() as conn:
        conn.execute(ENUM_ARRAY)
    pipeline.write_config("  - {name: paints, from: tracksolid.paints, watermark: recorded_at, key: [id]}\n")
    pipeline.cli("migrate", check=True)
    time.sleep(0.15)
    pipeline.cli("run", check=True)
    with pipeline.src() as s, pipeline.wh() as w:
        row = w.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                        "WHERE attrelid = 'bronze.paints'::regclass AND attname = 'colours'").fetchone()
        assert row == ("text[]",)
        assert table_digest(s, "tracksolid.paints") == table_digest(w, "bronze.paints")
        assert w.execute("SELECT colours FROM bronze.paints WHERE id = 4").fetchone() == (["with space", None],)


# ----------------------------------------------------------------------------------------- geometry

SHAPES = """
CREATE TABLE tracksolid.shapes (
    id int PRIMARY KEY,
    gp geometry(Point, 4326), gl geometry(LineString, 32737), gg geometry,
    recorded_at timestamptz NOT NULL DEFAULT now());
INSERT INTO tracksolid.shapes (id, gp, gl, gg) VALUES
    (1, 'SRID=4326;POINT(36.82 -1.28)', 'SRID=32737;LINESTRING(257000 9857000,257100.5 9857100.25)',
        'SRID=3857;POLYGON((0 0,10 0,10 10,0 10,0 0))'),
    (2, 'SRID=4326;POINT(-0.5 51.25)', NULL, 'SRID=4326;MULTIPOINT((1 2),(3 4))'),
    (3, NULL, 'SRID=32737;LINESTRING(0 0,1 1,2 0)', NULL),
    (4, ST_SetSRID(ST_MakePoint(36.123456789012345, -1.987654321098765), 4326), NULL, NULL);
"""

SHAPE_TABLES = """\
  - name: shapes_ewkb
    from: tracksolid.shapes
    watermark: recorded_at
    key: [id]
    geometry: [gp, gl, gg]
  - name: shapes_ewkt
    from: tracksolid.shapes
    watermark: recorded_at
    key: [id]
    geometry: [gp, gl, gg]
    geometry_format: ewkt
"""


def batch_text(pipeline: Pipeline, table: str) -> str:
    files = [f for f in pipeline.files("processed", table) if f.endswith(".csv.gz")]
    assert len(files) == 1
    return gzip.decompress((pipeline.blob / "processed" / table / files[0]).read_bytes()).decode()


def test_geometry_formats_ewkb_and_ewkt(pipeline: Pipeline) -> None:
    with pipeline.src() as conn:
        conn.execute(SHAPES)
    pipeline.write_config(SHAPE_TABLES)
    pipeline.cli("migrate", check=True)
    time.sleep(0.15)
    out = pipeline.cli("run", check=True).stdout
    assert "shapes_ewkb: loaded 4 of 4 rows" in out and "shapes_ewkt: loaded 4 of 4 rows" in out

    # the files carry what the table asked for: hex EWKB by default, EWKT when told
    ewkb_file, ewkt_file = batch_text(pipeline, "shapes_ewkb"), batch_text(pipeline, "shapes_ewkt")
    assert "0101000020E6100000" in ewkb_file and "SRID=" not in ewkb_file
    assert "SRID=4326;POINT(36.82 -1.28)" in ewkt_file and "SRID=3857;POLYGON((0 0,10 0,10 10,0 10,0 0))" in ewkt_file
    assert "0101000020E6100000" not in ewkt_file

    query = ("SELECT id, ST_AsEWKB(gp), ST_AsEWKB(gl), ST_AsEWKB(gg), ST_SRID(gp), ST_SRID(gl), ST_SRID(gg) "
             "FROM {} ORDER BY id")
    with pipeline.src() as s, pipeline.wh() as w:
        source = s.execute(sql.SQL(query).format(sql.Identifier("tracksolid", "shapes"))).fetchall()
        # ewkb: every byte, every SRID, the NULLs
        assert w.execute(sql.SQL(query).format(sql.Identifier("bronze", "shapes_ewkb"))).fetchall() == source
        assert table_digest(s, "tracksolid.shapes") == table_digest(w, "bronze.shapes_ewkb")
        ewkt = w.execute(sql.SQL(query).format(sql.Identifier("bronze", "shapes_ewkt"))).fetchall()
        assert [r[4:] for r in ewkt] == [r[4:] for r in source]  # SRIDs (and NULLs) kept
        assert [[c is None for c in r] for r in ewkt] == [[c is None for c in r] for r in source]
        types = dict(w.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = 'bronze.shapes_ewkt'::regclass AND a.attnum > 0").fetchall())
        assert types["gp"] == "geometry(Point,4326)" and types["gl"] == "geometry(LineString,32737)"
        assert types["gg"] == "geometry"

    # ewkt: the same shapes (simple coordinates compare equal; the long ones within 1e-15)
    with pipeline.wh() as w:
        w.execute("CREATE TEMP TABLE src_shapes (id int, gp geometry, gl geometry, gg geometry)")
        with w.cursor().copy("COPY src_shapes FROM STDIN") as copy:
            for row in source:
                copy.write_row([row[0], *(None if g is None else g.hex() for g in row[1:4])])
        rows = w.execute(
            "SELECT s.id, "
            "  (s.gp IS NULL AND e.gp IS NULL) OR ST_Equals(s.gp, e.gp), "
            "  (s.gl IS NULL AND e.gl IS NULL) OR ST_Equals(s.gl, e.gl), "
            "  (s.gg IS NULL AND e.gg IS NULL) OR ST_Equals(s.gg, e.gg), "
            "  coalesce(ST_Distance(s.gp, e.gp), 0) "
            "FROM src_shapes s JOIN bronze.shapes_ewkt e USING (id) ORDER BY s.id").fetchall()
        assert [r[0] for r in rows] == [1, 2, 3, 4]
        for id_, gp_ok, gl_ok, gg_ok, dist in rows:
            assert dist < 1e-14, id_
            if id_ != 4:
                assert gp_ok and gl_ok and gg_ok, id_


# --------------------------------------------------------------------------------- arbitrary text

TEXT_TABLE = """\
  - name: texts
    from: tracksolid.texts
    watermark: recorded_at
    key: [id]
"""

any_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"))


def test_arbitrary_text_round_trips(pipeline: Pipeline) -> None:
    values: list[str] = []

    @settings(max_examples=25, deadline=None, database=None)
    @given(st.lists(any_text, min_size=1, max_size=8))
    @example(["", "\\N", "\\.", '"', "\r\n", "NULL", ",\n,"])
    def collect(texts: list[str]) -> None:
        values.extend(texts)

    collect()
    assert len(values) >= 25

    with pipeline.src() as conn:
        conn.execute("CREATE TABLE tracksolid.texts (id int PRIMARY KEY, v text, "
                     "recorded_at timestamptz NOT NULL DEFAULT now())")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO tracksolid.texts (id, v) VALUES (%s, %s)",
                            [(i, v) for i, v in enumerate(values)])
    pipeline.write_config(TEXT_TABLE)
    pipeline.cli("migrate", check=True)
    time.sleep(0.15)
    pipeline.cli("run", check=True)
    with pipeline.src() as s, pipeline.wh() as w:
        assert table_digest(s, "tracksolid.texts") == table_digest(w, "bronze.texts")
        bronze = dict(w.execute("SELECT id, v FROM bronze.texts").fetchall())
    assert len(bronze) == len(values)
    for i, value in enumerate(values):
        assert bronze[i] == value, f"text {value!r} came back as {bronze[i]!r}"
