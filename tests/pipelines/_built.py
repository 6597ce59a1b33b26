"""A small build folder as ``manyi forms build`` writes it, for the publish tests.

The form is converted by pyxform exactly as forms/build.py does (XForm, pyxform JSON, the
XLSForm itself) and uses a roster CSV through ``select_one_from_file``, so it has an
attachment to publish.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pyxform.xls2xform import convert

from tests.helpers import write_md_form

FORM = "roster_check"
TITLE = "花名册核查"


def build(
    out: Path,
    version: str,
    roster: str = "name,label\nh1,示例户一\nh2,示例户二\n",
    note_label: str = "备注",
    *,
    form_id: str = FORM,
    title: str = TITLE,
) -> Path:
    """Write ``form_id``'s XForm, XLSForm, JSON and roster, and a manifest listing it."""
    out.mkdir(parents=True, exist_ok=True)
    md = f"""
    | survey |
    | | type | name | label::Chinese (zh) | label::English (en) |
    | | select_one_from_file households.csv | household | 户 | Household |
    | | text | note | {note_label} | Note |
    | settings |
    | | form_id | form_title | version | default_language |
    | | {form_id} | {title} | {version} | Chinese (zh) |
    """
    xlsx = write_md_form(md, out / f"{form_id}.xlsx")
    result = convert(str(xlsx), validate=False, pretty_print=True)
    (out / f"{form_id}.xml").write_text(result.xform, encoding="utf-8")
    (out / f"{form_id}.json").write_text(
        json.dumps(result._pyxform, ensure_ascii=False), encoding="utf-8"
    )
    (out / "households.csv").write_text(roster, encoding="utf-8")
    entry = {
        "form_id": form_id,
        "version": version,
        "title": title,
        "md5": hashlib.md5(result.xform.encode("utf-8")).hexdigest(),  # noqa: S324 - Central's hash
        "xlsx": f"{form_id}.xlsx",
        "xform": f"{form_id}.xml",
        "json": f"{form_id}.json",
        "attachments": ["households.csv"],
    }
    manifest = out / "manifest.json"
    forms = json.loads(manifest.read_text("utf-8"))["forms"] if manifest.exists() else []
    forms = [f for f in forms if f["form_id"] != form_id] + [entry]
    manifest.write_text(json.dumps({"forms": forms}, ensure_ascii=False), encoding="utf-8")
    return out
