"""The index page, ``<out_dir>/index.html``: links every map and report under the outputs
folder, maps first, and works on a phone. Rewritten after every run that writes outputs.
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader

from geo.maps import DOMAINS
from pipelines.config import SHANGHAI

_INDEX = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True
).get_template("index.html.j2")


def write_index(out_dir: Path, title: str = "满意度提升工程") -> Path:
    """(Re)write ``out_dir/index.html`` linking every map and report found under ``out_dir``.

    HTML pages are listed by their ``<title>``; XLSX and CSV files by name. Call it again after
    writing reports so the index lists them too.
    """
    out_dir = Path(out_dir)
    entries = []
    for path in sorted(out_dir.rglob("*")):
        if not path.is_file() or path.name == "index.html":
            continue
        if path.suffix.lower() not in (".html", ".xlsx", ".csv", ".pdf"):
            continue
        rel = path.relative_to(out_dir).as_posix()
        label = path.stem
        if path.suffix.lower() == ".html":
            head = path.read_text(encoding="utf-8", errors="replace")[:20000]
            found = re.search(r"<title>(.*?)</title>", head, re.S)
            label = html.unescape(found.group(1).strip()) if found else path.stem
        section = "地图" if rel.startswith("maps/") else "报告与清单"
        entries.append({"href": rel, "label": label, "section": section, "kind": path.suffix[1:]})
    entries.sort(key=_index_order)
    stamp = datetime.now(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    page = _INDEX.render(title=title, entries=entries, stamp=stamp)
    target = out_dir / "index.html"
    target.write_text(page, encoding="utf-8")
    return target


_MAP_ORDER = ["overview", *DOMAINS]
_REPORT_ORDER = ("月调度通报", "跟进清单", "数据质量")
_KIND_ORDER = ("html", "xlsx", "csv", "pdf")


def _index_order(entry: dict[str, str]) -> tuple:
    """Maps first (the overview, then the domains); then reports, newest date first, the
    dispatch report before the lists, HTML before XLSX before CSV."""
    href, kind = entry["href"], entry["kind"].lower()
    if entry["section"] == "地图":
        stem = Path(href).stem
        return (0, _MAP_ORDER.index(stem) if stem in _MAP_ORDER else len(_MAP_ORDER), href)
    folder, _, name = href.rpartition("/")
    rank = next((i for i, p in enumerate(_REPORT_ORDER) if name.startswith(p)), len(_REPORT_ORDER))
    newest_first = tuple(-ord(c) for c in folder)
    return (1, newest_first, rank, _KIND_ORDER.index(kind) if kind in _KIND_ORDER else 9, name)
