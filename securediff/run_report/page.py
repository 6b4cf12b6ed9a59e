"""One self-contained HTML page for a finished run: no script, no external
resource (inline CSS, images as data: URIs), so it opens the same offline, in
an archive, or attached to a review. Every string from the run is escaped."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from typing import Any

from securediff.figures import privacy_label

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;
 padding:0 1rem;color:#1b1f24;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;
 margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:.7rem;overflow-x:auto;font-size:.82rem}
pre.config{columns:16rem;column-rule:1px solid #d0d7de}
.scroll{overflow-x:auto}.banner{display:inline-block;padding:.25rem .7rem;border-radius:4px;
 font-weight:700;color:#fff}.private{background:#1a7f37}.not-private{background:#c62828}
.note{color:#57606a;font-size:.88rem}img{max-width:100%;image-rendering:pixelated;
 border:1px solid #d0d7de}nav a{margin-right:.8rem}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}g}"
    return esc(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: set[int] = frozenset()
          ) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"num\">{num(c)}</td>" if i in numeric else f"<td>{esc(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def png_img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt=\"{esc(alt)}\" src=\"data:image/png;base64,{data}\">"


def section(anchor: str, title: str, body: str) -> str:
    return f"<section id=\"{esc(anchor)}\"><h2>{esc(title)}</h2>\n{body}\n</section>"


def banner(statement: dict[str, Any]) -> str:
    label = privacy_label(statement)
    css = "private" if label == "PRIVATE" else "not-private"
    return f"<span class=\"banner {css}\">{esc(label)}</span>"


def document(*, title: str, header: str, sections: Sequence[tuple[str, str, str]]) -> str:
    nav = " ".join(f"<a href=\"#{esc(a)}\">{esc(t)}</a>" for a, t, _ in sections)
    body = "\n".join(section(a, t, b) for a, t, b in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>\n<h1>{esc(title)}</h1>\n{header}\n"
            f"<nav>{nav}</nav>\n{body}\n</body></html>\n")
