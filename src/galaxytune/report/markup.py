"""The HTML pieces every report section is built from, and the inline style sheet."""

from __future__ import annotations

import base64
import html

import numpy as np

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; }
thead th[colspan] { text-align: center; }
.scroll { overflow-x: auto; }
table.stages td { white-space: nowrap; }
table.text td, table.text th { text-align: left; overflow-wrap: anywhere; }
.ci { display: block; color: #666; font-size: .85em; white-space: nowrap; }
.kept { color: #a05a00; font-size: .85em; }
.headline { display: flex; flex-wrap: wrap; gap: .8em; margin: 1em 0; }
.headline .metric { border: 1px solid #ddd; border-radius: 6px; padding: .5em 1em; background: #fafafa; }
.headline .value { font-size: 1.8em; font-weight: 600; font-variant-numeric: tabular-nums; }
.headline .value .ci { font-size: .45em; font-weight: normal; }
img.plot { max-width: 100%; display: block; margin: .5em 0 1.5em; }
.note { color: #555; font-size: .92em; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .8em; }
.card { border: 1px solid #ddd; border-radius: 4px; padding: .4em; font-size: .8em; overflow-wrap: anywhere; }
.card img, .card .missing { width: 128px; height: 128px; display: block; margin: 0 auto .3em; }
.card .missing { background: #eee; color: #888; text-align: center; line-height: 128px; }
"""


def esc(value: object) -> str:
    return html.escape(str(value))


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def fmt(value: object) -> str:
    """Cells: integers as they are, floats to 4 decimals, NaN as '-', text escaped."""
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return "-" if np.isnan(value) else f"{value:.4f}"
    return esc(value)


def number(text: str | None) -> object:
    """A CSV cell as int or float, so that it is formatted like the other tables ('-' when empty)."""
    if text in (None, ""):
        return "-"
    return int(text) if text.lstrip("-").isdigit() else float(text)


def table(header: list[str], rows: list[list[object]], text: bool = False) -> str:
    """A table of escaped, formatted cells (no header row when ``header`` is empty); ``text``:
    cells of words and paths, aligned left rather than as numbers."""
    head = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    opening = '<table class="text">' if text else "<table>"
    return f"{opening}{head}<tbody>{body}</tbody></table>"


def section(title: str, *parts: str, anchor: str = "") -> str:
    """An <h2> section; ``anchor``: its id."""
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>\n" + "\n".join(parts) + "\n</section>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'
