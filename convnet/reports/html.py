"""Self-contained HTML pages: inline CSS, images embedded as base64, nothing fetched."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

STYLE = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9dee3; --accent: #1f6fb2; --bg: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #102a43; color: #fff; padding: 24px 32px 16px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
header p { margin: 0; color: #bcccdc; }
nav { margin-top: 14px; display: flex; flex-wrap: wrap; gap: 6px 18px; }
nav a { color: #9fd3ff; text-decoration: none; font-size: 14px; }
nav a:hover { text-decoration: underline; }
main { max-width: 1400px; margin: 0 auto; padding: 8px 32px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          margin: 20px 0; padding: 8px 24px 20px; }
h2 { font-size: 20px; font-weight: 600; margin: 14px 0 10px; }
h3 { font-size: 16px; font-weight: 600; margin: 18px 0 8px; }
.note { color: var(--muted); margin: 0 0 12px; max-width: 80ch; }
.warning { background: #fff4e5; border-left: 4px solid #d97706; padding: 8px 12px;
           margin: 0 0 12px; max-width: 100ch; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; margin: 20px 0 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px;
        padding: 12px 18px; min-width: 150px; }
.card .label { color: var(--muted); font-size: 13px; }
.card .value { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; }
.columns { display: flex; flex-wrap: wrap; gap: 32px; align-items: flex-start; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: #f0f4f8; font-weight: 600; font-size: 14px; }
td.num, th.num { text-align: right; }
tr.summary td { font-weight: 600; background: #fafbfc; }
.best { font-weight: 700; color: #0b6e4f; }
.bar { display: inline-block; height: 9px; border-radius: 2px; background: #7cb7e8;
       margin-right: 8px; vertical-align: middle; }
pre { background: #f0f4f8; padding: 12px; border-radius: 6px; overflow: auto; font-size: 13px;
      max-height: 420px; }
details summary { cursor: pointer; color: var(--accent); margin: 8px 0; }
"""


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]], cards: str = "") -> str:
    """A whole HTML document.

    Args:
        title: the page's heading and <title>.
        subtitle: one line under the heading.
        sections: (anchor id, heading, body HTML) for each section, linked from the header.
        cards: HTML shown between the header and the first section.
    """
    nav = "".join(f'<a href="#{id_}">{escape(heading)}</a>' for id_, heading, _ in sections)
    body = "".join(
        f'<section id="{id_}"><h2>{escape(heading)}</h2>{content}</section>'
        for id_, heading, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p><nav>{nav}</nav></header>"
        f"<main>{cards}{body}</main></body></html>\n"
    )


def image(path: str | Path, alt: str) -> str:
    """A PNG file as an <img> carrying its own bytes, so the page works offline and alone."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}"></figure>'


def cards(values: list[tuple[str, str]]) -> str:
    """Headline numbers as a row of cards: (label, formatted value)."""
    items = "".join(
        f'<div class="card"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div></div>'
        for label, value in values
    )
    return f'<div class="cards">{items}</div>'


def table(
    headers: list[str],
    rows: list[list],
    numeric: set[int] = frozenset(),
    summary_rows: int = 0,
) -> str:
    """An HTML table; cells are escaped unless they are `Raw`.

    Args:
        headers: column titles.
        rows: one list of cells per row; floats are shown with 4 decimals.
        numeric: indices of columns aligned right.
        summary_rows: how many rows at the end to set in bold (averages, totals).
    """
    head = "".join(
        f'<th class="num">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    lines = []
    for index, row in enumerate(rows):
        cells = "".join(_cell(value, i in numeric) for i, value in enumerate(row))
        summary = index >= len(rows) - summary_rows
        lines.append(f'<tr class="summary">{cells}</tr>' if summary else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


class Raw(str):
    """Cell content that is already HTML (built by this module from escaped parts)."""


def _cell(value, numeric: bool) -> str:
    if isinstance(value, Raw):
        text = value
    elif isinstance(value, float):
        text = f"{value:.4f}"
    else:
        text = escape("" if value is None else str(value))
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def warning(text: str) -> str:
    """A highlighted paragraph for something the reader must not miss."""
    return f'<p class="warning">{escape(text)}</p>'


def bar(fraction: float, text: str, width_px: int = 80) -> Raw:
    """A small horizontal bar of `fraction` (0-1) before `text`, for a table cell."""
    width = max(0.0, min(1.0, fraction)) * width_px
    return Raw(f'<span class="bar" style="width:{width:.0f}px"></span>{escape(text)}')


def best(text: str) -> Raw:
    """A cell marked as the best of its column."""
    return Raw(f'<span class="best">{escape(text)}</span>')


def key_values(mapping: dict) -> str:
    """A two-column table of a flat mapping; None shown as a dash, others as compact JSON."""
    rows = [
        [key, "—" if value is None else value if isinstance(value, str) else json.dumps(value)]
        for key, value in mapping.items()
    ]
    return table(["Setting", "Value"], rows)


def json_block(data) -> str:
    """Pretty-printed JSON in a <pre>."""
    return f"<pre>{escape(json.dumps(data, indent=2, default=str))}</pre>"


class HtmlPage(type(Path())):
    """The path of an HTML page convnet wrote (a run's report, a comparison), which a notebook
    shows inline: in an iframe, so that the page's own style stays inside it."""

    def _repr_html_(self) -> str:
        document = escape(self.read_text(encoding="utf-8"), quote=True)
        return (
            f'<iframe srcdoc="{document}" title="{escape(self.name)}" '
            'style="width: 100%; height: 820px; border: 1px solid #d9dee3"></iframe>'
        )
