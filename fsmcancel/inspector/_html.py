"""
The inspector's HTML pages, self-contained.

Everything a page needs is in it: the style sheet is inline, diagrams are
inline SVG (or text), refreshing is a ``<meta http-equiv="refresh">``, and
there is no script at all.  The page never loads anything from anywhere
(the inspector's Content-Security-Policy says so too), so it works on a
machine with no internet and leaks nothing to one.

Every string that comes from an operation (machine, state, resource and
input names, which an application chooses) goes through ``html.escape``
here; diagrams arrive already made safe by ``_diagrams``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from fsmcancel.inspector._diagrams import Diagram

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #212121; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.15em; margin: 1.5em 0 .5em; }
h3 { font-size: 1em; margin: 0 0 .4em; }
.meta { color: #616161; margin: 0 0 1em; }
table { border-collapse: collapse; margin-bottom: 1em; }
th, td { text-align: left; padding: .25em .8em .25em 0; border-bottom: 1px solid #e0e0e0;
         vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
ul.resources { margin: 0; padding-left: 1.1em; }
.state { font-weight: 600; background: #ffd54f; padding: 0 .3em; border-radius: 3px; }
section.group { border: 1px solid #e0e0e0; border-radius: 6px; padding: .8em; margin: 0 0 1em; }
svg.diagram { max-width: 100%; height: auto; }
pre.diagram { background: #fafafa; padding: .6em; overflow-x: auto; }
mark.current { background: #ffd54f; }
.note { color: #8d6e63; font-size: .9em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dt { color: #616161; }
dd { margin: 0; }
"""


@dataclass(frozen=True)
class Row:
    """
    One live operation, as a page shows it.
    """

    id: int
    name: str
    machine: str
    state: str
    kind: str
    seconds: float
    resources: tuple[str, ...]
    cancel_requested: bool


@dataclass(frozen=True)
class Group:
    """
    The operations of one machine in one state, and that diagram.
    """

    anchor: str
    machine: str
    state: str
    diagram: Diagram
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Step:
    """
    One recent transition, ``ago`` seconds ago.
    """

    ago: float
    old: str
    input: str
    new: str


def duration(seconds: float) -> str:
    """
    ``850 ms``, ``12.5 s``, ``3 min 20 s``, ``2 h 5 min``.
    """
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _page(title: str, refresh: float | None, body: str) -> bytes:
    again = "" if refresh is None else f'<meta http-equiv="refresh" content="{refresh:g}">'
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{again}'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    ).encode()


def _resources(resources: Sequence[str]) -> str:
    if not resources:
        return '<span class="note">nothing</span>'
    items = "".join(f"<li>{escape(r)}</li>" for r in resources)
    return f'<ul class="resources">{items}</ul>'


def _figure(diagram: Diagram) -> str:
    note = f'<p class="note">{escape(diagram.note)}</p>' if diagram.note else ""
    return f'<div class="figure">{diagram.markup}{note}</div>'


def index_page(groups: Sequence[Group], total: int, refresh: float) -> bytes:
    """
    Every live operation (in ``groups``; ``total`` counts those left out),
    then one diagram per machine and state, its operations listed.
    """
    rows = [(row, group) for group in groups for row in group.rows]
    rows.sort(key=lambda pair: pair[0].id)
    shown = len(rows)
    meta = (
        f'<span id="count">{total}</span> live operation{"" if total == 1 else "s"}'
        f" \u00b7 refreshes every {refresh:g} s"
        ' \u00b7 <a href="operations.json">operations.json</a>'
    )
    parts = [f'<h1>fsmcancel inspector</h1><p class="meta">{meta}</p>']
    if not rows:
        parts.append('<p id="empty">No live operations.</p>')
    else:
        parts.append(
            '<table id="operations"><thead><tr><th>operation</th><th>machine</th>'
            "<th>state</th><th>time in state</th><th>resources held</th></tr></thead><tbody>"
        )
        for row, group in rows:
            cancelled = (
                ' <span class="note">(cancel requested)</span>' if row.cancel_requested else ""
            )
            parts.append(
                f'<tr id="op-{row.id}" data-op-id="{row.id}" data-state="{escape(row.state)}">'
                f'<td><a href="operations/{row.id}">{escape(row.name)}</a></td>'
                f"<td>{escape(row.machine)}</td>"
                f'<td><a class="state" href="#{group.anchor}">{escape(row.state)}</a>'
                f"{cancelled}</td>"
                f'<td class="num">{duration(row.seconds)}</td>'
                f"<td>{_resources(row.resources)}</td></tr>"
            )
        parts.append("</tbody></table>")
        if shown < total:
            parts.append(
                f'<p class="note">{total - shown} more not shown: see '
                '<a href="operations.json">operations.json</a>.</p>'
            )
        parts.append("<h2>By machine and state</h2>")
        for group in groups:
            links = " ".join(f'<a href="operations/{r.id}">#{r.id}</a>' for r in group.rows)
            parts.append(
                f'<section class="group" id="{group.anchor}" '
                f'data-machine="{escape(group.machine)}" data-state="{escape(group.state)}">'
                f"<h3>{escape(group.machine)} in "
                f'<span class="state">{escape(group.state)}</span>: {links}</h3>'
                f"{_figure(group.diagram)}</section>"
            )
    title = f"fsmcancel inspector: {total} live operation{'' if total == 1 else 's'}"
    return _page(title, refresh, "\n".join(parts))


def operation_page(
    row: Row, diagram: Diagram, history: Sequence[Step] | None, refresh: float
) -> bytes:
    """
    One operation: what it holds, its diagram and its recent transitions
    (``None``: the registry keeps no history).
    """
    fields = [
        ("machine", escape(row.machine)),
        ("state", f'<span class="state" id="state">{escape(row.state)}</span> ({row.kind})'),
        ("time in state", duration(row.seconds)),
        ("resources held", _resources(row.resources)),
        ("cancel requested", "yes" if row.cancel_requested else "no"),
    ]
    dl = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in fields)
    parts = [
        f"<h1>{escape(row.name)}</h1>",
        f'<p class="meta"><a href="../">all operations</a> \u00b7 '
        f'<a href="{row.id}.json">{row.id}.json</a> \u00b7 refreshes every {refresh:g} s</p>',
        f"<dl>{dl}</dl>",
        _figure(diagram),
        "<h2>Recent transitions</h2>",
    ]
    if history is None:
        parts.append(
            '<p class="note">No history is kept: create the registry with '
            "<code>Registry(history=N)</code> to see the last N transitions.</p>"
        )
    elif not history:
        parts.append('<p class="note">None yet.</p>')
    else:
        parts.append(
            '<table id="history"><thead><tr><th>when</th><th>from</th><th>input</th>'
            "<th>to</th></tr></thead><tbody>"
        )
        for step in history:
            parts.append(
                f'<tr><td class="num">{duration(step.ago)} ago</td><td>{escape(step.old)}</td>'
                f"<td>{escape(step.input)}</td><td>{escape(step.new)}</td></tr>"
            )
        parts.append("</tbody></table>")
    return _page(f"{row.name} in {row.state}", refresh, "\n".join(parts))


def error_page(status: int, message: str, home: str) -> bytes:
    """
    A page saying what went wrong, and the way back to the inspector.
    """
    body = (
        f'<h1>{status}</h1><p id="error">{escape(message)}</p>'
        f'<p><a href="{escape(home)}">all operations</a></p>'
    )
    return _page(f"{status}: {message}", None, body)
