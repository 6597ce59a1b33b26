"""The Central stand-in the tests use: the demo's server
(:mod:`pipelines.demo.central_server`) with fault injection (:mod:`tests.standins.faults`),
brought to the state the recorded exchanges end in (``load_recorded``), or filled with
synthetic sanitation-sweep submissions in any number (``seed_synthetic``)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.demo import central_server
from pipelines.demo._central_formats import _xml_form_id, _xml_title, _xml_version
from tests.standins.faults import Faults, InjectFaults

RECORDED_FORMS = ("sanitation_sweep", "odata_types_probe")


class _Handler(InjectFaults, central_server._Handler):
    @property
    def faulty(self) -> Faults:
        return self.central  # type: ignore[return-value]

    def _injected(self, status: int, headers: dict[str, str]) -> None:
        self._send(
            status, {"message": "Service unavailable (injected)", "code": float(status)}, headers
        )


class CentralStandIn(Faults, central_server.CentralStandIn):
    """The demo's Central stand-in, with faults, a request log and a per-request hook."""

    handler = _Handler

    def load_recorded(self, fixtures: Path, forms: Collection[str] = ("sanitation_sweep",)) -> None:
        """Bring the stand-in to the state the recorded exchanges end in: the forms (both
        published versions of sanitation_sweep; ``RECORDED_FORMS`` adds the OData types
        probe), each submission with its system fields, review state, files and the XML as
        it was sent (A–F and X), and the app user 巡查员 01 assigned to sanitation_sweep."""
        exchanges = [json.loads(p.read_text("utf-8")) for p in sorted(fixtures.glob("[0-9]*.json"))]
        sent = _sent_submissions(exchanges)
        photos = {p.name.split("_")[-1]: p.read_bytes() for p in fixtures.glob("bodies/photo_*")}
        for path in sorted((fixtures / "forms").glob("*.xml")):
            xml = path.read_bytes()
            form_id = _xml_form_id(ET.fromstring(xml))  # noqa: S314 - our own fixtures
            if form_id in forms:
                self.add_form(form_id, _xml_version(xml), xml, _xml_title(xml))
        if "sanitation_sweep" in forms:
            self.add_app_user("巡查员 01", ["sanitation_sweep"])
        for form_id in forms:
            for row in reversed(_recorded_feed(exchanges, self.project_id, form_id)):
                self._add_recorded(form_id, row, sent.get(row["__id"]), photos)

    def _add_recorded(
        self, form_id: str, row: dict[str, Any], sent: _Sent | None, photos: dict[str, bytes]
    ) -> None:
        system = row["__system"]
        fields = {k: v for k, v in row.items() if not k.startswith("__") and "@odata" not in k}
        repeats = {
            k: [{n: x for n, x in r.items() if n != "__id"} for r in fields.pop(k)]
            for k in [k for k, v in fields.items() if isinstance(v, list)]
        }
        names = [r["photo"] for rows in repeats.values() for r in rows if r.get("photo")]
        sub = self.add_submission(
            form_id,
            row["__id"],
            fields,
            {k: v for k, v in repeats.items() if v},
            version=system["formVersion"],
            attachments={n: photos.get(n) for n in names},
            submitter_id=system["submitterId"],
            submitter_name=system["submitterName"],
            device_id=system["deviceId"],
            review_state=system["reviewState"],
            xml=sent.xml if sent else None,
            user_agent=sent.user_agent if sent else None,
        )
        sub.created = _parse_ts(system["submissionDate"])
        sub.updated = _parse_ts(system["updatedAt"]) if system["updatedAt"] else None
        self._clock = max(self._clock, sub.updated or sub.created)


@dataclass
class _Sent:
    xml: bytes
    user_agent: str | None


def _sent_submissions(exchanges: list[dict[str, Any]]) -> dict[str, _Sent]:
    """instanceId → the XML as it was accepted, from the REST (raw XML) and OpenRosa
    (multipart) submissions that the recorded server took."""
    out: dict[str, _Sent] = {}
    for ex in exchanges:
        req, resp = ex["request"], ex["response"]
        agent = req.get("headers", {}).get("User-Agent")
        if req["method"] != "POST" or resp["status"] not in (200, 201):
            continue
        if req["path"].endswith("/submissions") and isinstance(resp.get("body"), dict):
            iid = resp["body"].get("instanceId")
            text = req.get("body")
        elif req["path"].endswith("/submission"):
            text = next(
                (
                    p.get("body")
                    for p in req.get("multipart_parts", [])
                    if p["name"] == "xml_submission_file"
                ),
                None,
            )
            found = re.search(r"<instanceID>([^<]+)</instanceID>", text or "")
            iid = found.group(1) if found else None
        else:
            continue
        if iid and isinstance(text, str) and iid not in out:
            out[iid] = _Sent(text.encode("utf-8"), agent)
    return out


def _recorded_feed(exchanges: list[dict[str, Any]], project_id: int, form_id: str) -> list[Any]:
    """The fullest recorded OData feed of a form (``$expand=*`` if there is one)."""
    path = f"/v1/projects/{project_id}/forms/{form_id}.svc/Submissions"
    feeds = {
        ex["request"]["raw_query"]: ex["response"]["body"]["value"]
        for ex in exchanges
        if ex["request"]["method"] == "GET"
        and ex["request"]["path"] == path
        and ex["response"]["status"] == 200
        and ex["request"]["raw_query"] in ("", "$expand=*")
    }
    return feeds.get("$expand=*", feeds.get("", []))


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def synthetic_xform(form_id: str, version: str) -> bytes:
    """A small sanitation-sweep-like XForm: a ``piles`` repeat with a binary ``photo``."""
    return f"""<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"
 xmlns:jr="http://openrosa.org/javarosa" xmlns:odk="http://www.opendatakit.org/xforms">
<h:head><h:title>{form_id}</h:title><model odk:xforms-version="1.0.0"><instance>
<data id="{form_id}" version="{version}"><village/><location/><pile_count/>
<piles jr:template=""><pile_type/><photo/></piles><piles><pile_type/><photo/></piles>
<cleared/><note/><meta><instanceID/><instanceName/></meta></data></instance>
<bind nodeset="/data/village" type="string" required="true()"/>
<bind nodeset="/data/location" type="geopoint"/>
<bind nodeset="/data/pile_count" type="int"/>
<bind nodeset="/data/piles/pile_type" type="string"/>
<bind nodeset="/data/piles/photo" type="binary"/>
<bind nodeset="/data/cleared" type="string"/>
<bind nodeset="/data/note" type="string"/>
<bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>
<bind nodeset="/data/meta/instanceName" type="string"/>
</model></h:head>
<h:body><group ref="/data/piles"><repeat nodeset="/data/piles">
<input ref="/data/piles/pile_type"/><upload ref="/data/piles/photo" mediatype="image/*"/>
</repeat></group></h:body></h:html>""".encode()


def seed_synthetic(
    central: central_server.CentralStandIn,
    form_id: str,
    n: int,
    photo_every: int = 100,
    start: int = 0,
    version: str = "2024010101",
    every_ms: int = 60_000,
) -> list[str]:
    """Add ``n`` sanitation-sweep-like submissions, each with 1–3 pile rows; every
    ``photo_every``-th carries a small photo. Returns their instance ids.

    They arrive ``every_ms`` apart on the stand-in's clock (a minute: a busy day in the
    field), not a millisecond apart, so a pull's safety margin on the server clock covers
    about as many submissions as it would on a real server."""
    if form_id not in central.forms:
        central.add_form(form_id, version, synthetic_xform(form_id, version), form_id)
    ids = []
    for i in range(start, start + n):
        iid = f"uuid:00000000-0000-4000-8000-{i:012d}"
        piles = [
            {"pile_type": ("firewood", "manure", "garbage")[(i + k) % 3], "photo": None}
            for k in range(1 + i % 3)
        ]
        photos: dict[str, bytes | None] = {}
        if photo_every and i % photo_every == 0:
            name = f"{1764374400000 + i}.jpg"
            piles[0]["photo"] = name
            photos[name] = b"\xff\xd8\xff\xe0" + i.to_bytes(8, "big") + b"\xff\xd9"
        central.tick(max(0, every_ms - 1))  # add_submission ticks the last millisecond
        central.add_submission(
            form_id,
            iid,
            {
                "village": f"3704811152{i % 56:02d}",
                "location": {
                    "type": "Point",
                    "coordinates": [117.26 + i % 97 / 1e4, 35.17 + i % 89 / 1e4, 50],
                    "properties": {"accuracy": 5},
                },
                "pile_count": len(piles),
                "cleared": "no",
                "note": f"第{i}次巡查",
                "meta": {"instanceID": iid, "instanceName": f"{i}"},
            },
            {"piles": piles},
            attachments=photos,
        )
        ids.append(iid)
    return ids
