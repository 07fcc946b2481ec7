"""The data gates of `verify`: first run (loaded, parity, geometry, files, accounting) and steady state
(freshness, failures, growth). Each returns (status, detail, numbers); none writes anything."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from bronzeline.batches.area import Area
from bronzeline.config.models import TableConfig
from bronzeline.context import Context
from bronzeline.models.spec import CheckSpec
from bronzeline.observe.cadence import Cadence
from bronzeline.observe.probe import TableProbe
from bronzeline.text import first_line, human_duration, iso
from bronzeline.warehouse.model_ledger import CheckRecord

Status = Literal["pass", "fail", "warn", "skip"]
Result = tuple[Status, str, dict[str, Any]]
GEOMETRY_SAMPLE = 200
_SRID = re.compile(r",\s*(\d+)\)$")


# ------------------------------------------------------------------------------------ first run
def loaded_run(ctx: Context, table: TableConfig) -> Result:
    runs = ctx.control.loaded_runs(table.name)
    loaded, total, last = runs.loaded, runs.total, runs.last_loaded_run
    numbers = {"loaded_runs": loaded, "runs": total, "last_loaded_run": last}
    if loaded:
        return "pass", f"{loaded} loaded run(s) of {total}; last loaded run {last}", numbers
    return "fail", f"no loaded run ({total} run(s) in the ledger); run `bronzeline run {table.name}`", numbers


def parity(probe: TableProbe) -> Result:
    table = probe.table
    if table.mode == "snapshot":
        last = probe.last_loaded_run()
        if last is None:
            return "skip", "no loaded snapshot yet", {}
        bronze = probe.bronze_rows()
        expected = last.rows_extracted or 0
        source_now = probe.source_rows()
        numbers: dict[str, Any] = {"source_rows_at_load": expected, "bronze_rows": bronze,
                                   "source_rows_now": source_now, "run_id": last.run_id}
        if bronze == expected:
            return "pass", f"bronze has the {bronze:,} rows the source had at load (run {last.run_id})", numbers
        return "fail", (f"bronze has {bronze:,} rows, the source had {expected:,} when run {last.run_id} loaded "
                        f"it; run `bronzeline run {table.name}` to reload the snapshot"), numbers
    bound = probe.watermark()
    if bound is None:
        return "skip", "no watermark yet (nothing loaded)", {}
    source = probe.source_rows(high=bound)
    bronze = probe.bronze_rows(high=bound)
    numbers = {"source_rows": source, "bronze_rows": bronze, "difference": bronze - source,
               "bound": iso(bound)}
    if source == bronze:
        return "pass", f"{source:,} rows on both sides up to the watermark {iso(bound)}", numbers
    if bronze < source:
        how = (f"bronze is missing {source - bronze:,} row(s) the source has up to the watermark; "
               f"run `bronzeline backfill {table.name} --since <before the gap>` then `bronzeline run {table.name}`")
    else:
        how = (f"bronze has {bronze - source:,} row(s) more than the source up to the watermark (rows deleted at "
               "the source stay in bronze for incremental tables, or rows were written to bronze by hand)")
    return "fail", how, numbers


def geometry(probe: TableProbe) -> Result:
    table = probe.table
    brz, src = probe.geometry_sample(GEOMETRY_SAMPLE)
    nkey = len(table.key)
    by_key = {tuple(row[:nkey]): row for row in src}
    mismatched = srid_bad = invalid = invalid_src = missing = 0
    for row in brz:
        other = by_key.get(tuple(row[:nkey])) if nkey else None
        if nkey and other is None:
            missing += 1
        for i, name in enumerate(table.geometry):
            base = nkey + 3 * i
            text, srid, valid = row[base:base + 3]
            col = probe.column(name)
            declared = _SRID.search(col.type) if col else None
            if text is not None and declared and srid != int(declared.group(1)):
                srid_bad += 1
            if valid is False:
                invalid += 1
            if other is not None:
                if other[base] != text:
                    mismatched += 1
                if other[base + 1] != srid:
                    srid_bad += 1
                if other[base + 2] is False:
                    invalid_src += 1
    numbers = {"sampled": len(brz), "compared": len(brz) - missing if nkey else 0, "mismatched": mismatched,
               "srid_mismatched": srid_bad, "invalid": invalid, "invalid_at_source": invalid_src,
               "missing_at_source": missing, "format": table.geometry_format}
    if not brz:
        return "skip", "bronze is empty: nothing to sample", numbers
    if mismatched or srid_bad or invalid > invalid_src:
        return "fail", (f"of {len(brz)} sampled rows: {mismatched} geometries differ from the source, {srid_bad} "
                        f"SRIDs differ, {invalid} invalid ({invalid_src} invalid at the source); check "
                        "geometry_format and the column's SRID, then `bronzeline reseed`"), numbers
    same = "identical" if table.geometry_format == "ewkb" else "equal at 15 decimals"
    note = f", {missing} no longer at the source" if missing else ""
    return "pass", f"{numbers['compared']} sampled geometries {same} to the source, SRIDs kept{note}", numbers


def exports_empty(ctx: Context, table: TableConfig) -> Result:
    """Nothing waits in exports/: counted as `status` counts it (complete batches and incomplete files)."""
    pending = Area(ctx.store, table.name).count()
    numbers = {"files": pending.files, "complete_batches": pending.complete, "incomplete_files": pending.incomplete}
    if not pending.files:
        return "pass", "exports/ is empty", numbers
    shown = ", ".join(pending.names[:3]) + (" …" if len(pending.names) > 3 else "")
    what = []
    if pending.complete:
        what.append(f"{pending.complete} complete batch(es) not loaded yet: `bronzeline run {table.name}` loads "
                    "them (a batch that does not match its manifest moves to failed/)")
    if pending.incomplete:
        what.append(f"{pending.incomplete} incomplete file(s) (a data file without its manifest is a write that "
                    f"did not finish): `bronzeline run {table.name}` deletes them and re-extracts their window")
    return "fail", f"{pending.files} file(s) left in exports/{table.name}/ ({shown}); " + "; ".join(what), numbers


def accounting(ctx: Context) -> Result:
    check = ctx.control.accounting()
    bad = check.mismatched
    numbers = {"runs_checked": check.runs_checked, "mismatched": len(bad),
               "mismatched_runs": [r.run_id for r in bad[:20]]}
    if not bad:
        return "pass", f"rows_extracted = rows_loaded + rows_skipped in all {check.runs_checked} runs", numbers
    first = bad[0]
    return "fail", (f"{len(bad)} run(s) do not account for their rows, e.g. run {first.run_id} ({first.table_name}): "
                    f"extracted {first.rows_extracted}, loaded {first.rows_loaded}, skipped {first.rows_skipped}; "
                    "investigate, then `bronzeline backfill` the window"), numbers


# --------------------------------------------------------------------------------- steady state
def freshness(ctx: Context, table: TableConfig, cadence: Cadence) -> Result:
    found = ctx.control.freshness(table.name)
    age = found.seconds_since_load
    lag = found.watermark_age_seconds if table.mode == "incremental" else None
    limit = 2 * cadence.seconds
    numbers = {"seconds_since_load": age, "watermark_lag_seconds": lag, "limit_seconds": limit,
               "cadence_seconds": cadence.seconds, "cadence_from": cadence.origin}
    if age is None:
        return "fail", f"never loaded; run `bronzeline run {table.name}`", numbers
    worst = max(age, lag or 0.0)
    text = f"last load {human_duration(age)} ago"
    if lag is not None:
        text += f", watermark {human_duration(lag)} old"
    if worst <= limit:
        return "pass", f"{text}; limit {human_duration(limit)} = 2 × cadence ({cadence.origin})", numbers
    why = "" if age > limit else " (a long source transaction holds the bound back, or runs load no new window)"
    return "fail", (f"{text}{why}: older than {human_duration(limit)} = 2 × cadence ({cadence.origin}); check the "
                    f"scheduler and `bronzeline runs {table.name}`"), numbers


def failures_24h(ctx: Context, table: TableConfig) -> Result:
    found = ctx.control.failures_24h(table.name)
    numbers = {"failed_runs": found.count, "last_failed_run": found.last_run_id}
    if not found.count:
        return "pass", "no failed run in 24 h", numbers
    error = first_line(found.last_error or "no message")[:200]
    return "fail", f"{found.count} failed run(s) in 24 h; last (run {found.last_run_id}): {error}", numbers


def growth(probe: TableProbe, cadence: Cadence) -> Result:
    """Rows the source gained in the day before the freshness limit must all be in bronze by now."""
    table = probe.table
    grace = timedelta(seconds=2 * cadence.seconds)
    if table.mode == "snapshot":
        last = probe.last_loaded_run()
        source, bronze = probe.source_rows(), probe.bronze_rows()
        numbers: dict[str, Any] = {"source_rows": source, "bronze_rows": bronze}
        finished = last.run_finished_at if last else None
        now = probe.source_clock()
        stale = finished is None or now - finished > grace
        if source > bronze and stale:
            return "fail", (f"the source has {source - bronze:,} row(s) more than bronze and the last load is older "
                            f"than {human_duration(grace.total_seconds())}; run `bronzeline run {table.name}`"), numbers
        return "pass", f"{bronze:,} rows in bronze, {source:,} at the source now", numbers
    high = probe.source_clock(grace)
    low = high - timedelta(days=1)
    source, bronze = probe.source_rows(low, high), probe.bronze_rows(low, high)
    numbers = {"source_rows": source, "bronze_rows": bronze, "window_start": iso(low), "window_end": iso(high)}
    span = f"({iso(low, 'minutes')}, {iso(high, 'minutes')}]"
    if bronze >= source:
        return "pass", f"the source gained {source:,} row(s) in {span}; bronze has {bronze:,}", numbers
    return "fail", (f"the source gained {source:,} row(s) in {span} but bronze has {bronze:,}: bronze is not "
                    f"keeping up; check `bronzeline status` and `bronzeline runs {table.name}`"), numbers


def error_checks(relation: str, specs: tuple[CheckSpec, ...], latest: list[CheckRecord]) -> Result:
    """The latest result of each of the relation's error-severity checks (the last build's, or a later
    `bronzeline test`'s): any that failed fails the gate, with its failing rows."""
    wanted = [s for s in specs if s.severity == "error"]
    found: dict[str, CheckRecord] = {}
    for spec in wanted:
        # the ledger names a check by its kind (with the column apart) or as the spec names it
        match = next((c for c in latest if c.relation == relation and c.column_name == spec.column
                      and c.check_name in (spec.kind, spec.name)), None)
        if match is not None:
            found[spec.name] = match
    failed = {name: c for name, c in found.items() if c.status == "fail"}
    numbers = {"error_checks": len(wanted), "checked": len(found),
               "failing_rows": {name: c.failing_rows for name, c in found.items()}}
    if failed:
        shown = ", ".join(f"{name} ({c.failing_rows:,} of {c.total_rows:,} rows"
                          f"{': ' + first_line(c.error_message) if c.error_message else ''})"
                          for name, c in failed.items())
        return "fail", (f"{len(failed)} of {len(wanted)} error check(s) failed: {shown}; fix the data or the "
                        f"model, then `bronzeline build {relation}`"), numbers
    if not found:
        return "warn", f"none of its {len(wanted)} error check(s) has run yet; run `bronzeline build`", numbers
    unrun = len(wanted) - len(found)
    note = f" ({unrun} not run yet)" if unrun else ""
    return "pass", f"{len(found)} error check(s) passed in their latest run{note}", numbers
