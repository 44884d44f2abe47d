"""A report as plain blocks (text, tables, images) in sections, and its two renderings: HTML and Markdown.

The HTML is one self-contained file (images embedded as base64 PNG, inline CSS, no script), so it
opens offline; the Markdown refers to PNG files written beside it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Text:
    text: str
    note: bool = False  # a small explanatory line


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str | None = None


@dataclass
class Image:
    name: str  # file name stem, unique within the report
    png: bytes
    alt: str


@dataclass
class Section:
    title: str
    blocks: list[Text | Table | Image] = field(default_factory=list)
    level: int = 2

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")

    def images(self) -> list[Image]:
        return [block for block in self.blocks if isinstance(block, Image)]


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    return str(value)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .85em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .25em .45em; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; white-space: normal; vertical-align: bottom; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3em; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0 1em; }
.note { color: #555; font-size: .88em; } nav ul { columns: 2; }
"""


def to_html(title: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head>",
             f"<body><h1>{html.escape(title)}</h1><nav><ul>"]
    parts += [f"<li><a href=\"#{s.anchor}\">{html.escape(s.title)}</a></li>" for s in sections if s.level == 2]
    parts.append("</ul></nav>")
    for section in sections:
        parts.append(f"<h{section.level} id=\"{section.anchor}\">{html.escape(section.title)}</h{section.level}>")
        for block in section.blocks:
            if isinstance(block, Text):
                css = " class=\"note\"" if block.note else ""
                parts.append(f"<p{css}>{html.escape(block.text)}</p>")
            elif isinstance(block, Table):
                caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
                head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
                               for row in block.rows)
                parts.append(f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(f"<img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(block.alt)}\">")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _md_cell(value: Any) -> str:
    return cell(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, sections: list[Section], image_dir: str) -> str:
    """Markdown with images referenced as ``image_dir/<name>.png`` (relative to the Markdown file)."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += ["#" * section.level + " " + section.title, ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [f"*{block.text}*" if block.note else block.text, ""]
            elif isinstance(block, Table):
                if block.caption:
                    lines += [f"**{block.caption}**", ""]
                lines.append("| " + " | ".join(block.columns) + " |")
                lines.append("|" + "---|" * len(block.columns))
                lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.rows]
                lines.append("")
            else:
                lines += [f"![{block.alt}]({image_dir}/{block.name}.png)", ""]
    return "\n".join(lines)
