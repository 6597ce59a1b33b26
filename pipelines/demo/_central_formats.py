"""What the Central stand-in derives from a form's XForm, as Central does: the fields
(``…/fields``), the OData ``$metadata`` (EDMX), the media files it refers to, a submission's
XML (for submissions added without one) and the CSV export (``submissions.csv[.zip]``)."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
import zipfile
from functools import lru_cache
from typing import Any
from xml.sax.saxutils import escape

from pipelines.demo._central_model import Form, Sub, _ts
from pipelines.sources.exports.collect import local_name

_XF = "{http://www.w3.org/2002/xforms}"
_GEO_TYPES = ("Point", "LineString", "Polygon")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# ---- the XForm -----------------------------------------------------------------------
_FILE_REF = re.compile(rb"jr://file(?:-csv)?/([^\"'<\s]+)")
_EDM = {
    "int": "Edm.Int64",
    "decimal": "Edm.Decimal",
    "date": "Edm.Date",
    "dateTime": "Edm.DateTimeOffset",
    "boolean": "Edm.Boolean",
    "geopoint": "Edm.GeographyPoint",
    "geotrace": "Edm.GeographyLineString",
    "geoshape": "Edm.GeographyPolygon",
}
# the <Annotation>s of Central's Submissions EntitySet; {fields} is the non-filterable list
_EDMX_ANNOTATIONS = """\
          <Annotation Term="Org.OData.Capabilities.V1.ConformanceLevel" EnumMember="Org.OData.Capabilities.V1.ConformanceLevelType/Minimal"/>
          <Annotation Term="Org.OData.Capabilities.V1.BatchSupported" Bool="false"/>
          <Annotation Term="Org.OData.Capabilities.V1.CountRestrictions">
            <Record><PropertyValue Property="Countable" Bool="true"/></Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.FilterFunctions">
            <Record>
              <PropertyValue Property="NonCountableProperties">
                <Collection>
                  <String>eq</String>
                </Collection>
              </PropertyValue>
            </Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.FilterFunctions">
            <Record>
              <PropertyValue Property="Filterable" Bool="true"/>
              <PropertyValue Property="RequiresFilter" Bool="false"/>
              <PropertyValue Property="NonFilterableProperties">
                <Collection>
{fields}
                </Collection>
              </PropertyValue>
            </Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.SortRestrictions">
            <Record><PropertyValue Property="Sortable" Bool="false"/></Record>
          </Annotation>
          <Annotation Term="Org.OData.Capabilities.V1.ExpandRestrictions">
            <Record><PropertyValue Property="Expandable" Bool="false"/></Record>
          </Annotation>"""
_EDMX_SYSTEM = """\
    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="org.opendatakit.submission">
      <ComplexType Name="metadata">
        <Property Name="submissionDate" Type="Edm.DateTimeOffset"/>
        <Property Name="updatedAt" Type="Edm.DateTimeOffset"/>
        <Property Name="deletedAt" Type="Edm.DateTimeOffset"/>
        <Property Name="submitterId" Type="Edm.String"/>
        <Property Name="submitterName" Type="Edm.String"/>
        <Property Name="attachmentsPresent" Type="Edm.Int64"/>
        <Property Name="attachmentsExpected" Type="Edm.Int64"/>
        <Property Name="status" Type="org.opendatakit.submission.Status"/>
        <Property Name="reviewState" Type="org.opendatakit.submission.ReviewState"/>
        <Property Name="deviceId" Type="Edm.String"/>
        <Property Name="edits" Type="Edm.Int64"/>
        <Property Name="formVersion" Type="Edm.String"/>
      </ComplexType>
      <EnumType Name="Status">
        <Member Name="notDecrypted"/>
        <Member Name="missingEncryptedFormData"/>
      </EnumType>
      <EnumType Name="ReviewState">
        <Member Name="hasIssues"/>
        <Member Name="edited"/>
        <Member Name="rejected"/>
        <Member Name="approved"/>
      </EnumType>
    </Schema>
"""


def _declared_files(xml: bytes) -> list[str]:
    """Media the XForm refers to (``jr://file/x.jpg``, ``jr://file-csv/x.csv``)."""
    return list(dict.fromkeys(m.decode() for m in _FILE_REF.findall(xml)))


def _attachment_type(name: str) -> str:
    return "file" if name.endswith(".csv") else "image"


def _xml_title(xml: bytes) -> str:
    try:
        root = ET.fromstring(xml)  # noqa: S314
    except ET.ParseError:
        return ""
    return root.findtext(".//{http://www.w3.org/1999/xhtml}title") or ""


@lru_cache(maxsize=64)  # every feed page asks; the XML is the key
def _fields(xml: bytes) -> list[dict[str, Any]]:
    """``GET …/fields?odata=true``: one entry per bound node, as Central derives it
    (nothing for a form added without a parseable XForm)."""
    try:
        root = ET.fromstring(xml)  # noqa: S314
    except ET.ParseError:
        return []
    instance = next(iter(next(root.iter(f"{_XF}instance"))), None)
    if instance is None:
        return []
    repeats = {el.get("nodeset", "") for el in root.iter(f"{_XF}repeat")}
    multiple = {el.get("ref", "") for el in root.iter(f"{_XF}select")}
    binds = {el.get("nodeset", ""): el.get("type", "string") for el in root.iter(f"{_XF}bind")}
    base = "/" + local_name(instance.tag)
    out: list[dict[str, Any]] = []

    def walk(el: ET.Element, path: str) -> None:
        for child in el:
            name = local_name(child.tag)
            full = f"{path}/{name}"
            if any(o["path"] == full[len(base) :] for o in out):
                continue  # a repeat's template and its first row
            kind = binds.get(full, "string")
            if full in repeats:
                kind = "repeat"
            elif len(child):
                kind = "structure"
            out.append(
                {
                    "path": full[len(base) :],
                    "name": name,
                    "type": kind,
                    "binary": True if kind == "binary" else None,
                    "selectMultiple": True if full in multiple else None,
                }
            )
            if len(child):
                walk(child, full)

    walk(instance, base)
    return out


def _all_fields(form: Form) -> list[dict[str, Any]]:
    """The fields of every published version, newest version's order first (the export's
    columns cover every version)."""
    out: dict[str, dict[str, Any]] = {}
    for info in form.versions:
        for f in _fields(form.xmls.get(info["version"], form.xml)):
            out.setdefault(f["path"], f)
    return list(out.values())


def _tables(fields: list[dict[str, Any]]) -> list[str]:
    """Repeat paths (``/piles``, ``/grp/rep``) in form order: one OData table each."""
    return [f["path"] for f in fields if f["type"] == "repeat"]


def _form_tables(form: Form) -> list[str]:
    """The form's repeat tables; from its submissions when it has no XForm to read."""
    found = _tables(_fields(form.xml))
    return found or ["/" + k for k in dict.fromkeys(k for s in form.subs for k in s.repeats)]


def _table_name(repeat_path: str) -> str:
    return "Submissions." + repeat_path.strip("/").replace("/", ".")


def _owner(fields: list[dict[str, Any]], path: str) -> str:
    """The innermost repeat a field belongs to ('' for the submission itself)."""
    reps = [r for r in _tables(fields) if path.startswith(r + "/")]
    return max(reps, key=len) if reps else ""


def _edmx(form: Form) -> str:
    """``$metadata``, derived from the current XForm as Central does."""
    fields = _fields(form.xml)
    ns = f"org.opendatakit.user.{form.form_id}"
    types: list[str] = []
    complex_types: list[str] = []

    def props(parent: str) -> list[str]:
        out = []
        for f in fields:
            if f["path"].rsplit("/", 1)[0] != parent:
                continue
            if f["type"] == "repeat":
                target = f"{ns}.{_table_name(f['path'])}"
                out.append(f'<NavigationProperty Name="{f["name"]}" Type="Collection({target})"/>')
                continue
            if f["type"] == "structure":
                kind = f"{ns}.{f['name']}"
                inner = "\n".join(f"        {p}" for p in props(f["path"]))
                complex_types.append(
                    f'      <ComplexType Name="{f["name"]}">\n{inner}\n      </ComplexType>\n'
                )
            else:
                kind = _EDM.get(f["type"], "Edm.String")
            out.append(f'<Property Name="{f["name"]}" Type="{kind}"/>')
        return out

    def entity(name: str, parent: str, keys: list[str]) -> None:
        lines = [f'<Property Name="{k}" Type="{t}"/>' for k, t in keys]
        lines += props(parent)
        body = "\n".join(f"        {line}" for line in lines)
        types.append(
            f'      <EntityType Name="{name}">\n        <Key><PropertyRef Name="__id"/></Key>\n'
            f"{body}\n      </EntityType>\n"
        )

    entity(
        "Submissions",
        "",
        [("__id", "Edm.String"), ("__system", "org.opendatakit.submission.metadata")],
    )
    for rep in _tables(fields):
        parent = _owner(fields, rep)
        parent_key = (
            "__Submissions-" + (parent.strip("/").replace("/", "-") + "-" if parent else "") + "id"
        )
        entity(_table_name(rep), rep, [("__id", "Edm.String"), (parent_key, "Edm.String")])
    top = [f["name"] for f in fields if f["path"].count("/") == 1]
    paths = "\n".join(f"                  <PropertyPath>{n}</PropertyPath>" for n in top)
    sets = "".join(
        f'        <EntitySet Name="{_table_name(r)}" EntityType="{ns}.{_table_name(r)}">\n'
        "        </EntitySet>\n"
        for r in _tables(fields)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">\n'
        "  <edmx:DataServices>\n"
        f"{_EDMX_SYSTEM}"
        f'    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{ns}">\n'
        + "".join(types)
        + "".join(complex_types)
        + f'      <EntityContainer Name="{form.form_id}">\n'
        f'        <EntitySet Name="Submissions" EntityType="{ns}.Submissions">\n'
        + _EDMX_ANNOTATIONS.replace("{fields}", paths)
        + "\n        </EntitySet>\n"
        + sets
        + "      </EntityContainer>\n    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>"
    )


def _xml_form_id(root: ET.Element) -> str:
    for inst in root.iter(f"{_XF}instance"):
        for child in inst:
            return child.get("id", "")
    return ""


def _xml_version(xml: bytes) -> str:
    root = ET.fromstring(xml)  # noqa: S314
    for inst in root.iter(f"{_XF}instance"):
        for child in inst:
            return child.get("version", "")
    return ""


# ---- submission XML and the CSV export -----------------------------------------------
def _geo_text(value: dict[str, Any]) -> str:
    """GeoJSON back to the XForm's ``lat lon alt acc`` (points ``;``-separated)."""

    def point(c: list[float], acc: Any = 0) -> str:
        lon, lat, *alt = c
        return " ".join(_num(x) for x in (lat, lon, alt[0] if alt else 0, acc or 0))

    coords = value["coordinates"]
    if value["type"] == "Point":
        return point(coords, (value.get("properties") or {}).get("accuracy"))
    ring = coords[0] if value["type"] == "Polygon" else coords
    return ";".join(point(c) for c in ring)


def _render_xml(form: Form, sub: Sub) -> bytes:
    """A submission's XML from its fields, for those added without one (the demo's)."""
    root = _root_tag(form.xml)

    def walk(name: str, value: Any) -> str:
        if isinstance(value, list):
            return "".join(walk(name, r) for r in value)
        if isinstance(value, dict) and value.get("type") in _GEO_TYPES:
            value = _geo_text(value)
        if isinstance(value, dict):
            return f"<{name}>" + "".join(walk(k, v) for k, v in value.items()) + f"</{name}>"
        if value is None:
            return f"<{name}/>"
        text = _num(value) if isinstance(value, float) else str(value)
        return f"<{name}>{escape(text)}</{name}>"

    body = "".join(walk(k, v) for k, v in {**sub.fields, **sub.repeats}.items())
    head = f'<{root} id="{escape(form.form_id)}" version="{escape(sub.version)}">'
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}{body}</{root}>'.encode()


@lru_cache(maxsize=64)
def _root_tag(xml: bytes) -> str:
    """The XForm's instance root (``data``), the root of its submissions."""
    try:
        return local_name(next(iter(next(ET.fromstring(xml).iter(f"{_XF}instance")))).tag)  # noqa: S314
    except (ET.ParseError, StopIteration):
        return "data"


def _sub_tree(form: Form, sub: Sub) -> ET.Element:
    try:
        return ET.fromstring(sub.xml or _render_xml(form, sub))  # noqa: S314
    except ET.ParseError:  # Central keeps what its lenient parser read (X in the recordings)
        return ET.fromstring(_render_xml(form, sub))  # noqa: S314


def _find(el: ET.Element, parts: list[str]) -> list[ET.Element]:
    found = [el]
    for part in parts:
        found = [c for e in found for c in e if local_name(c.tag) == part]
    return found


def _columns(fields: list[dict[str, Any]], owner: str) -> list[tuple[str, str, str]]:
    """(path relative to the table, column name, type) of one table's value columns."""
    out = []
    for f in fields:
        if f["type"] in ("structure", "repeat") or _owner(fields, f["path"]) != owner:
            continue
        rel = f["path"][len(owner) + 1 :]
        name = rel.replace("/", "-")
        if f["type"] == "geopoint":
            out += [(rel, f"{name}-{p}", "geopoint") for p in ("Latitude", "Longitude", "Altitude", "Accuracy")]  # fmt: skip
        else:
            out.append((rel, name, f["type"]))
    return out


def _cells(el: ET.Element, columns: list[tuple[str, str, str]]) -> list[str]:
    cells, seen_geo = [], ""
    for rel, _name, kind in columns:
        hit = _find(el, rel.split("/"))
        text = (hit[0].text or "").strip() if hit else ""
        if kind == "geopoint":
            if rel == seen_geo:
                continue
            seen_geo = rel
            cells += [*text.split(), "", "", "", ""][:4]
        else:
            cells.append(text)
    return cells


def _csv_tables(form: Form) -> dict[str, str]:
    """The CSV export: ``<form>.csv`` and one ``<form>-<repeat>.csv`` per repeat, newest
    submission first, values as submitted (from the XML)."""
    fields = _all_fields(form)
    trees = [(s, _sub_tree(form, s)) for s in reversed(form.subs) if s.deleted is None]
    system = "KEY,SubmitterID,SubmitterName,AttachmentsPresent,AttachmentsExpected,Status,ReviewState,DeviceID,Edits,FormVersion"  # fmt: skip
    root_cols = _columns(fields, "")
    rows = [["SubmissionDate", *(c[1] for c in root_cols), *system.split(",")]]
    for s, tree in trees:
        present = sum(1 for v in s.attachments.values() if v is not None)
        system_cells = [s.instance_id, s.submitter_id, s.submitter_name, str(present)]
        system_cells += [str(len(s.attachments)), "", s.review_state or "", s.device_id or ""]
        rows.append(
            [_ts(s.created), *_cells(tree, root_cols), *system_cells, str(s.edits), s.version]
        )
    out = {f"{form.form_id}.csv": _csv(rows)}
    for rep in _tables(fields):
        cols = _columns(fields, rep)
        table = [[*(c[1] for c in cols), "PARENT_KEY", "KEY"]]
        for s, tree in trees:
            parts = rep.strip("/").split("/")
            for i, el in enumerate(_find(tree, parts)):
                key = f"{s.instance_id}/{'/'.join(parts)}[{i + 1}]"
                table.append([*_cells(el, cols), s.instance_id, key])
        out[f"{form.form_id}-{rep.rsplit('/', 1)[-1]}.csv"] = _csv(table)
    return out


def _csv(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _csv_zip(form: Form, media: bool) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in _csv_tables(form).items():
            zf.writestr(name, text.encode("utf-8"))
        if media:
            files = {n: b for s in form.subs if s.deleted is None for n, b in s.attachments.items()}
            for name, data in sorted(files.items()):
                if data is not None:
                    zf.writestr(f"media/{name}", data)
    return buf.getvalue()
