"""The status page's models section: the model graph drawn server-side as SVG (boxes in dependency
layers, left to right; arrows from what a model reads to the model; built green, failed or blocked red,
never built grey), and a table of the models with their checks. No script, no library."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from bronzeline.config.models import Config
from bronzeline.observe.model_facts import FAILING, ModelGraph, ModelStatus, ModelsView
from bronzeline.warehouse.model_ledger import CheckRecord

# state -> (fill, stroke, text): presentation attributes on the shapes, so the picture needs no CSS
COLOURS = {
    "built": ("#dcfce7", "#16a34a", "#14532d"),
    "failed": ("#fee2e2", "#dc2626", "#7f1d1d"),
    "blocked": ("#fee2e2", "#dc2626", "#7f1d1d"),
    "building": ("#fef3c7", "#d97706", "#78350f"),
    "never": ("#f3f4f6", "#9ca3af", "#4b5563"),
    "source": ("#ffffff", "#64748b", "#334155"),
}
BOX_H, ROW_H, GAP_X, PAD, CHAR_W = 40, 56, 64, 16, 7.2


@dataclass(frozen=True)
class Box:
    name: str
    state: str
    x: float
    y: float
    w: float
    note: str
    tip: str


def layers(graph: ModelGraph) -> list[list[str]]:
    """Nodes by depth (a model sits one layer right of the deepest thing it reads); in each layer, nodes
    sit near the average position of what they read, which keeps arrows short and crossings few."""
    upstream = graph.upstream
    depth: dict[str, int] = {}

    def level(node: str, seen: frozenset[str] = frozenset()) -> int:
        if node not in depth:
            above = [u for u in upstream.get(node, ()) if u not in seen]
            depth[node] = 1 + max((level(u, seen | {node}) for u in above), default=-1)
        return depth[node]

    nodes = list(graph.materialized) + sorted({u for ups in upstream.values() for u in ups} - set(graph.materialized))
    for node in nodes:
        level(node)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    place: dict[str, float] = {}
    for i in range(len(out)):
        members = [n for n in nodes if depth[n] == i]

        def centre(node: str) -> tuple[float, str]:
            ups = [place[u] for u in upstream.get(node, ()) if u in place]
            return (sum(ups) / len(ups) if ups else -1.0, node)

        members.sort(key=centre)
        out[i] = members
        place.update({n: j for j, n in enumerate(members)})
    return out


def _state(name: str, graph: ModelGraph, status: dict[str, ModelStatus]) -> str:
    if name not in graph.materialized:
        return "source"
    found = status.get(name)
    return "never" if found is None else found.status if found.status in COLOURS else "never"


def _note(name: str, state: str, graph: ModelGraph, status: dict[str, ModelStatus]) -> str:
    if state == "source":
        return "table"
    found = status.get(name)
    kind = graph.materialized[name]
    if found is None:
        return f"{kind} · never built"
    if state in FAILING:
        return f"{kind} · {state}"
    rows = f" · {found.rows:,} rows" if found.rows is not None else ""
    return f"{kind}{rows}"


def boxes(graph: ModelGraph, models: list[ModelStatus]) -> list[Box]:
    status = {m.model: m for m in models}
    out: list[Box] = []
    x = float(PAD)
    for members in layers(graph):
        notes = {n: _note(n, _state(n, graph, status), graph, status) for n in members}
        width = max(max(len(n), len(notes[n]) * 0.9) for n in members) * CHAR_W + 24
        for j, name in enumerate(members):
            state = _state(name, graph, status)
            found = status.get(name)
            tip = f"{name}: {state}" + (f" — {found.message}" if found is not None and found.message else "")
            out.append(Box(name, state, x, PAD + j * ROW_H, width, notes[name], tip))
        x += width + GAP_X
    return out


def svg(graph: ModelGraph, models: list[ModelStatus]) -> str:
    """The graph as an inline <svg>; empty when the project has no models."""
    if not graph.materialized:
        return ""
    drawn = boxes(graph, models)
    at = {b.name: b for b in drawn}
    width = max(b.x + b.w for b in drawn) + PAD
    height = max(b.y for b in drawn) + BOX_H + PAD
    edges = []
    for model, ups in graph.upstream.items():
        to = at[model]
        for up in sorted(ups):
            src = at[up]
            x1, y1, x2, y2 = src.x + src.w, src.y + BOX_H / 2, to.x - 2, to.y + BOX_H / 2
            bad = src.state in FAILING
            colour, marker = ("#dc2626", "arrow-bad") if bad else ("#94a3b8", "arrow")
            edges.append(f'<path class="edge{" bad" if bad else ""}" data-from="{escape(up)}" '
                         f'data-to="{escape(model)}" d="M{x1:.1f},{y1:.1f} C{x1 + GAP_X / 2:.1f},{y1:.1f} '
                         f'{x2 - GAP_X / 2:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" fill="none" stroke="{colour}" '
                         f'stroke-width="1.5" marker-end="url(#{marker})"/>')
    nodes = []
    for b in drawn:
        fill, stroke, ink = COLOURS[b.state]
        dash = ' stroke-dasharray="4 3"' if b.state == "source" else ""
        nodes.append(
            f'<g class="node {b.state}" data-model="{escape(b.name)}"><title>{escape(b.tip)}</title>'
            f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{b.w:.1f}" height="{BOX_H}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"{dash}/>'
            f'<text x="{b.x + 10:.1f}" y="{b.y + 16:.1f}" fill="{ink}" font-size="12" font-weight="600">'
            f'{escape(b.name)}</text>'
            f'<text x="{b.x + 10:.1f}" y="{b.y + 31:.1f}" fill="{ink}" font-size="11">{escape(b.note)}</text></g>')
    markers = "".join(
        f'<marker id="{mid}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        for mid, colour in (("arrow", "#94a3b8"), ("arrow-bad", "#dc2626")))
    return (f'<svg class="model-graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="model dependency graph">'
            f'<defs>{markers}</defs>{"".join(edges)}{"".join(nodes)}</svg>')


def _local(value: datetime | None, config: Config) -> str:
    return value.astimezone(config.tz).strftime("%Y-%m-%d %H:%M:%S %Z") if value is not None else "—"


def _checks(checks: list[CheckRecord]) -> str:
    if not checks:
        return "<small>no checks</small>"
    items = []
    for c in checks:
        name = f"{c.check_name}({c.column_name})" if c.column_name else c.check_name
        count = f"{c.failing_rows:,} of {c.total_rows:,} failing" if c.failing_rows else f"{c.total_rows:,} rows"
        why = f' title="{escape(c.error_message)}"' if c.error_message else ""
        items.append(f'<li class="check {c.status}"{why}><span class="pill {_pill(c.status)}">{c.status}</span> '
                     f'{escape(name)} <small>{count}{" · warn" if c.severity == "warn" else ""}</small></li>')
    return f'<ul class="checks">{"".join(items)}</ul>'


def _pill(status: str) -> str:
    return {"pass": "fresh", "built": "fresh", "warn": "due", "building": "due"}.get(status, "stale")


def _rows(config: Config, view: ModelsView) -> str:
    listed = {m.model: m for m in view.models}
    names = list(view.graph.materialized) if view.graph is not None else list(listed)
    out = []
    for name in names:
        m = listed.get(name)
        kind = view.graph.materialized[name] if view.graph is not None else m.materialized if m else ""
        state = m.status if m is not None else "never built"
        pill = _pill(state) if m is not None else "never"
        why = f"<br><small>{escape(m.message)}</small>" if m is not None and m.message else ""
        out.append(f"""
      <tr class="model {escape(state.replace(' ', '-'))}"><td><b>{escape(name)}</b>
          <span class="mode">{escape(kind)}</span></td>
        <td><span class="pill {pill}">{escape(state)}</span>{why}</td>
        <td>{escape(_local(m.last_built_at if m else None, config))}</td>
        <td class="num">{'—' if m is None or m.rows is None else f'{m.rows:,}'}</td>
        <td>{_checks(view.checks_of(name))}</td></tr>""")
    for relation in sorted({c.relation for c in view.checks} - set(names)):
        out.append(f"""
      <tr class="source"><td><b>{escape(relation)}</b> <span class="mode">source</span></td><td></td><td></td>
        <td></td><td>{_checks(view.checks_of(relation))}</td></tr>""")
    return "".join(out)


def section(config: Config, view: ModelsView) -> str:
    """The models card; empty without a `models:` section."""
    if config.models is None:
        return ""
    error = f'<p class="model-error"><b>the models project has an error:</b> {escape(view.error)}</p>' \
        if view.error else ""
    picture = svg(view.graph, view.models) if view.graph is not None else ""
    rows = _rows(config, view)
    if not rows:
        return f'<section class="card models"><h2>Models</h2>{error}<p class="ok-note">No models yet.</p></section>'
    return f"""<section class="card models"><h2>Models</h2>{error}
  <div class="graph">{picture}</div>
  <p class="legend"><span class="pill fresh">built</span> · <span class="pill stale">failed or blocked</span>
    (keeps its last good version) · <span class="pill never">never built</span> · dashed: a table it reads</p>
  <table class="tables models"><thead><tr><th>model</th><th>status</th><th>last built</th>
    <th class="num">rows</th><th>checks</th></tr></thead>
  <tbody>{rows}</tbody></table></section>"""


def summary(view: ModelsView) -> str | None:
    """What the page's header adds about models, when something is wrong."""
    bad = [m for m in view.models if m.status in FAILING]
    failing = sum(c.status == "fail" for c in view.checks)
    parts = ([f"{len(bad)} model(s) failed or blocked"] if bad else []) + \
        ([f"{failing} check(s) failing"] if failing else [])
    return " · ".join(parts) or None
