"""Make the KoboToolbox XLSX exports in this folder (run once; the outputs are committed).

    .venv/bin/python tests/data/pipelines/make_kobo_xlsx.py

The submissions are the six readable ones of ``sanitation_sweep.csv.zip`` (a real ODK
Central export, see README.md), laid out the way KoboToolbox's "XLS" export does it:
formpack's ``Export`` as driven by kpi's export task, checked against the expected sheets
in kpi's ``kpi/tests/api/v2/test_api_exports.py`` (``test_xls_export_repeat_groups``) and
formpack's ``src/formpack/schema/fields.py``:

* one sheet per section: the form (named after the project, at most 31 characters), then
  one per repeat, named after the repeat;
* the form's questions in form order; a geopoint adds ``_<name>_latitude``,
  ``_longitude``, ``_altitude`` and ``_precision`` columns after its own;
* then ``_id, _uuid, _submission_time, _validation_status, _notes, _status, _submitted_by,
  __version__, _tags, _index`` on the form's sheet, and ``_index, _parent_table_name,
  _parent_index, _submission__id, _submission__uuid, …`` on a repeat's sheet;
* ``_id``, ``_index`` and ``_parent_index`` are numbers; answers are text.

Two exports are made, for the two header choices kpi offers:

* ``kobo_sanitation_sweep.xlsx``: "XML values and headers" with "include groups in
  headers" (``lang=_xml``, ``hierarchy_in_labels``), so a repeat's columns are
  ``piles/pile_type``;
* ``kobo_sanitation_sweep_labels.xlsx``: the Chinese labels, for both headers and choices.

What Central's export does not hold is made up and marked here: kpi's ``_id`` (16…),
``__version__`` uids (one per form version) and the ``_validation_status`` of B
(``hasIssues`` in Central, "on hold" in kpi). The pyxform JSON of the form
(``xforms/sanitation_sweep.json``) is written too, as ``manyi forms build`` writes it: it
tells the reader labels from names.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

from openpyxl import Workbook
from pyxform.xls2xform import convert
from tests.helpers import CENTRAL_FIXTURES

HERE = Path(__file__).resolve().parent
XLSFORM = CENTRAL_FIXTURES / "forms" / "sanitation_sweep_v2023020101.xlsx"
SHEET = "环境卫生巡查 (Sanitation sweep)"[:31]
VERSIONS = {
    "2023010101": "vLsNvCSTKWVCmZmbGmXx9x",
    "2023020101": "vQ5FiTwxNm7y8udPyzYrnS",
}  # made up
ROOT_SYSTEM = ["_id", "_uuid", "_submission_time", "_validation_status", "_notes", "_status",
               "_submitted_by", "__version__", "_tags", "_index"]  # fmt: skip
COPIED = ["_id", "_uuid", "_submission_time", "_validation_status", "_notes", "_status",
          "_submitted_by", "__version__", "_tags"]  # fmt: skip
ZH = "Chinese (zh)"


def main() -> None:
    form = convert(str(XLSFORM), validate=False)._pyxform
    (HERE / "xforms" / "sanitation_sweep.json").write_text(
        json.dumps(form, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    fields = {c["name"]: c for c in form["children"]}
    piles = {c["name"]: c for c in fields["piles"]["children"]}
    choices = {
        list_name: {c["name"]: c["label"][ZH] for c in items}
        for list_name, items in form["choices"].items()
    }
    with zipfile.ZipFile(HERE / "sanitation_sweep.csv.zip") as z:
        roots = list(csv.DictReader(io.StringIO(z.read("sanitation_sweep.csv").decode())))
        rows = list(csv.DictReader(io.StringIO(z.read("sanitation_sweep-piles.csv").decode())))
    # oldest first, as kpi sorts by _id; X (no meta/instanceID) never reaches kpi
    roots = [r for r in reversed(roots) if r["meta-instanceID"]]
    for labels in (False, True):
        book = Workbook()
        root_ws = book.active
        root_ws.title = SHEET
        pile_ws = book.create_sheet("piles")

        def label(field: dict, path: str, labels: bool = labels) -> str:
            return field["label"][ZH] if labels else path

        def choice(field: dict, value: str, labels: bool = labels) -> str:
            name = field.get("itemset") or field.get("list_name")
            return choices[name].get(value, value) if labels and name and value else value

        loc = label(fields["location"], "location")
        head = [label(fields["village"], "village"), loc]
        head += [f"_{loc}_{p}" for p in ("latitude", "longitude", "altitude", "precision")]
        head += [label(fields[n], n) for n in ("pile_count", "cleared", "rectify_by", "note")]
        root_ws.append(head + ROOT_SYSTEM)
        pile_head = [
            label(piles["pile_type"], "piles/pile_type"),
            label(piles["photo"], "piles/photo"),
        ]
        pile_ws.append(
            pile_head
            + ["_index", "_parent_table_name", "_parent_index"]
            + [f"_submission_{c}" for c in COPIED]
        )
        pile_index = 0
        for index, r in enumerate(roots, start=1):
            parts = [r[f"location-{p}"] for p in ("Latitude", "Longitude", "Altitude", "Accuracy")]
            status = "validation_status_on_hold" if r["ReviewState"] == "hasIssues" else ""
            if labels and status:
                status = "On Hold"
            system = [
                15 + index,  # _id
                r["KEY"].removeprefix("uuid:"),
                r["SubmissionDate"][:19],  # UTC, no zone, no fraction
                status,
                "",
                "submitted_via_web",
                "",
                VERSIONS[r["FormVersion"]],
                "",
            ]
            root_ws.append(
                [
                    choice(fields["village"], r["village"]),
                    " ".join(parts),
                    *parts,
                    r["pile_count"],
                    choice(fields["cleared"], r["cleared"]),
                    r["rectify_by"],
                    r["note"],
                    *system,
                    index,
                ]
            )
            for p in (p for p in rows if p["PARENT_KEY"] == r["KEY"]):
                pile_index += 1
                pile_ws.append(
                    [
                        choice(piles["pile_type"], p["pile_type"]),
                        p["photo"],
                        pile_index,
                        SHEET,
                        index,
                        *system,
                    ]
                )
        for ws in (root_ws, pile_ws):  # empty answers are empty cells
            for row in ws.iter_rows():
                for cell in row:
                    if cell.value == "":
                        cell.value = None
        name = "kobo_sanitation_sweep_labels.xlsx" if labels else "kobo_sanitation_sweep.xlsx"
        book.save(HERE / name)


if __name__ == "__main__":
    main()
