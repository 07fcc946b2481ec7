"""The one schema comparator: the source's columns against bronze's, as typed changes.

`migrate`, `run`, `verify` and `drift` all ask this module whether bronze matches the source, so they
can never disagree about it. Types compare after normalising case, spacing and a `public.` prefix;
a change of the type modifier only (varchar(15) → varchar(20), geometry SRID) is a `typmod` change,
anything else a `retyped` one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

Kind = Literal["added", "removed", "retyped", "typmod"]
_MOD = re.compile(r"\(([^()]*)\)")


class Typed(Protocol):
    """A column with a name and the type bronze has (or should have): sources.Column, ddl.BronzeColumn."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...


@dataclass(frozen=True)
class ColumnChange:
    kind: Kind
    column: str
    source_type: str | None  # None when the column is no longer at the source
    bronze_type: str | None  # None when bronze does not have it yet

    def describe(self) -> str:
        """One human-readable line, as `migrate`, `run` and `verify` print it."""
        if self.kind == "added":
            return f"column {self.column} ({self.source_type}) is at the source but not in bronze"
        if self.kind == "removed":
            return f"column {self.column} is in bronze but no longer at the source"
        return f"column {self.column} is {self.source_type} at the source but {self.bronze_type} in bronze"


# PostgreSQL's short names, as format_type() spells them (a declared type may use either).
_ALIASES = {"timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone",
            "timetz": "time with time zone", "time": "time without time zone", "int": "integer",
            "int4": "integer", "int8": "bigint", "int2": "smallint", "bool": "boolean", "float8": "double precision",
            "float4": "real", "varchar": "character varying", "decimal": "numeric", "char": "character"}


def split_type(typ: str) -> tuple[str, str]:
    """('character varying[]', '15') from 'character varying(15)[]' (or 'varchar(15)[]'); the modifier is ''
    when absent."""
    norm = re.sub(r"\s+", " ", typ.strip().lower().removeprefix("public."))
    base = re.sub(r"\s*\(", "(", _MOD.sub("", norm)).strip()
    array = base.endswith("[]")
    base = base.removesuffix("[]").strip()
    base = _ALIASES.get(base, base) + ("[]" if array else "")
    return base, ",".join(m.replace(" ", "") for m in _MOD.findall(norm))


def same_type(a: str, b: str) -> bool:
    return split_type(a) == split_type(b)


def compare(source: Iterable[Typed], bronze: Iterable[Typed]) -> list[ColumnChange]:
    """Source columns that bronze lacks or types differently (in source order), then bronze columns the
    source no longer has (in bronze order). Empty when they agree."""
    src = {c.name: c.type for c in source}
    brz = {c.name: c.type for c in bronze}
    out: list[ColumnChange] = []
    for name, typ in src.items():
        if name not in brz:
            out.append(ColumnChange("added", name, typ, None))
            continue
        (sbase, smod), (bbase, bmod) = split_type(typ), split_type(brz[name])
        if sbase != bbase:
            out.append(ColumnChange("retyped", name, typ, brz[name]))
        elif smod != bmod:
            out.append(ColumnChange("typmod", name, typ, brz[name]))
    out.extend(ColumnChange("removed", name, None, typ) for name, typ in brz.items() if name not in src)
    return out
