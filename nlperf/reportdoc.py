"""A report as a small document tree, rendered twice: Markdown (PNGs beside it) and one
self-contained HTML page (figures embedded as SVG data URIs, no remote resource, no script).

The sections are built once (nlperf/report.py); the renderers decide the markup, so the HTML
never shows Markdown syntax and the Markdown never shows HTML.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union


@dataclass(frozen=True)
class Span:
    """Text with a role: a verdict word, emphasis, a muted aside."""

    text: str
    role: str = ""  # faster | slower | no-change | inconclusive | strong | muted | warn | code


Inline = Union[str, Span]  # noqa: UP007 (a runtime alias)
Cell = Union[Inline, list[Inline]]  # noqa: UP007


@dataclass(frozen=True)
class Para:
    parts: list[Inline]


@dataclass(frozen=True)
class Note:
    text: str
    kind: Literal["warn", "info"] = "info"


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Cell]]
    numeric: Sequence[int] = ()  # right-aligned columns
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    name: str  # file stem of the PNG beside report.md
    caption: str
    png: bytes
    svg: str


@dataclass(frozen=True)
class Details:
    """Folded in HTML; a sub-heading in Markdown."""

    summary: str
    blocks: list[Block]


Block = Union[Para, Note, Table, Figure, Details]  # noqa: UP007


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


@dataclass
class Document:
    title: str
    facts: list[Inline]
    notes: list[Note]
    sections: list[Section]


def verdict_role(verdict: str) -> str:
    return verdict.replace(" ", "-")


# --------------------------------------------------------------------------- Markdown


def _md_inline(part: Inline) -> str:
    if isinstance(part, str):
        return part
    if part.role in ("strong", "faster", "slower"):
        return f"**{part.text}**"
    if part.role == "code":
        return f"`{part.text}`"
    if part.role == "muted":
        return f"_{part.text}_"
    return part.text


def _md_cell(cell: Cell) -> str:
    parts = cell if isinstance(cell, list) else [cell]
    return "".join(_md_inline(p) for p in parts).replace("|", "\\|").replace("\n", " ")


def _md_block(block: Block, out_dir: Path, level: int) -> list[str]:
    if isinstance(block, Para):
        return ["".join(_md_inline(p) for p in block.parts), ""]
    if isinstance(block, Note):
        mark = "⚠ " if block.kind == "warn" else ""
        return [f"> {mark}{block.text}", ""]
    if isinstance(block, Table):
        lines = [f"_{block.caption}_", ""] if block.caption else []
        lines.append("| " + " | ".join(block.header) + " |")
        lines.append("|" + "".join("---:|" if i in block.numeric else "---|"
                                   for i in range(len(block.header))))
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return [*lines, ""]
    if isinstance(block, Figure):
        (out_dir / f"{block.name}.png").write_bytes(block.png)
        return [f"![{block.caption}]({block.name}.png)", ""]
    lines = ["#" * (level + 1) + " " + block.summary, ""]
    for inner in block.blocks:
        lines += _md_block(inner, out_dir, level + 1)
    return lines


def to_markdown(doc: Document, out_dir: Path) -> str:
    """report.md, writing each figure's PNG into ``out_dir`` beside it."""
    lines = [f"# {doc.title}", "", " · ".join(_md_inline(p) for p in doc.facts), ""]
    for note in doc.notes:
        lines += _md_block(note, out_dir, 1)
    for s in doc.sections:
        lines += [f"## {s.title}", ""]
        for block in s.blocks:
            lines += _md_block(block, out_dir, 2)
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- HTML

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;
background:#fff;line-height:1.45}
main{max-width:1040px;margin:0 auto;padding:1.5em 1.5em 4em}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin:1.8em 0 .6em;padding-bottom:.2em;
border-bottom:2px solid #e3e7ec}h3{font-size:1.05em;margin:1.2em 0 .4em}
.facts{color:#4a5560;font-size:.92em}nav{font-size:.9em;margin:.8em 0 1em}
nav a{margin-right:1em;color:#2a5d9f;text-decoration:none}
.table{overflow-x:auto;margin:.4em 0 1em}table{border-collapse:collapse;font-size:.9em}
.caption{color:#4a5560;font-size:.85em;padding-bottom:.3em}
th{background:#f2f4f7;text-align:left;font-weight:600}
td,th{padding:4px 10px;border-bottom:1px solid #dde2e8;vertical-align:top}
td.num,th.num{text-align:right;white-space:nowrap}
.note{padding:.55em .9em;border-radius:6px;margin:.6em 0;font-size:.92em}
.note.warn{background:#fff4d6;border-left:5px solid #e0a100}
.note.info{background:#eef4fb;border-left:5px solid #6b9bd1}
.faster{color:#11703a;font-weight:600}.slower{color:#b3261e;font-weight:600}
.no-change{color:#5b6670}.inconclusive{color:#9a6700}
.strong{font-weight:600}.muted{color:#6b7580}.warn{color:#9a6700}
code,.code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
figure{margin:.8em 0 1.4em}figure img{width:100%;max-width:900px;height:auto;display:block}
figcaption{color:#4a5560;font-size:.88em;margin-top:.2em}
details{margin:.6em 0}summary{cursor:pointer;font-weight:600}
"""


def _html_inline(part: Inline) -> str:
    if isinstance(part, str):
        return html.escape(part)
    return f'<span class="{part.role}">{html.escape(part.text)}</span>'


def _html_cell(cell: Cell) -> str:
    parts = cell if isinstance(cell, list) else [cell]
    return "".join(_html_inline(p) for p in parts)


def _html_block(block: Block, level: int) -> str:
    if isinstance(block, Para):
        return "<p>" + "".join(_html_inline(p) for p in block.parts) + "</p>"
    if isinstance(block, Note):
        return f'<div class="note {block.kind}">{html.escape(block.text)}</div>'
    if isinstance(block, Table):
        def cls(i: int) -> str:
            return ' class="num"' if i in block.numeric else ""
        head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(block.header))
        body = "".join("<tr>" + "".join(f"<td{cls(i)}>{_html_cell(c)}</td>"
                                        for i, c in enumerate(row)) + "</tr>"
                       for row in block.rows)
        caption = (f'<div class="caption">{html.escape(block.caption)}</div>'
                   if block.caption else "")
        return (f'<div class="table">{caption}<table><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table></div>")
    if isinstance(block, Figure):
        data = base64.b64encode(block.svg.encode()).decode()
        return (f'<figure><img src="data:image/svg+xml;base64,{data}" '
                f'alt="{html.escape(block.caption)}"><figcaption>{html.escape(block.caption)}'
                "</figcaption></figure>")
    inner = "".join(_html_block(b, level + 1) for b in block.blocks)
    return f"<details><summary>{html.escape(block.summary)}</summary>{inner}</details>"


def to_html(doc: Document) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in doc.sections)
    parts = [f"<h1>{html.escape(doc.title)}</h1>",
             '<p class="facts">' + " · ".join(_html_inline(p) for p in doc.facts) + "</p>",
             *(_html_block(n, 1) for n in doc.notes), f"<nav>{nav}</nav>"]
    for s in doc.sections:
        parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        parts += [_html_block(b, 2) for b in s.blocks]
        parts.append("</section>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(doc.title)}</title><style>{STYLE}</style></head>"
            "<body><main>" + "\n".join(parts) + "</main></body></html>\n")
