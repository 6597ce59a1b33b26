"""What the streamed pull relies on in the Central stand-in, beyond the recorded exchanges
(``tests/pipelines/demo/test_central_conformance.py`` replays those): each behaviour here is
Central's, as its source at the recorded commit shows (central-backend ``4f5943d``,
``lib/model/query/submissions.js`` and ``lib/formats/odata.js``).

* Without ``$top`` a feed is whole, with no ``@odata.nextLink`` (recorded: ``39``, ``47``).
* Newest first: ``ORDER BY "createdAt" DESC, id DESC``.
* ``(… or …) and __system/submissionDate lt T`` gives the rest of a feed after a row.
* A ``$skiptoken`` joins on its row, deleted or not; a row Central no longer has leaves an
  empty page (the hazard that makes the pull resume by submissionDate instead).
* ``costs``: a round trip per request, a count per paged feed, a pace for the rows.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import pytest
import requests

from pipelines.sources._central_records import next_ms
from tests.helpers import CENTRAL_FIXTURES
from tests.standins.central_server import CentralStandIn, seed_synthetic

FORM = "stream_form"
FEED = f"/v1/projects/1/forms/{FORM}.svc/Submissions"


@pytest.fixture
def central() -> Iterator[CentralStandIn]:
    with CentralStandIn() as server:
        yield server


def session(server: CentralStandIn) -> requests.Session:
    s = requests.Session()
    token = s.post(
        f"{server.url}/v1/sessions", json={"email": server.email, "password": server.password}
    ).json()["token"]
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def feed(s: requests.Session, server: CentralStandIn, query: str = "") -> dict:
    resp = s.get(f"{server.url}{FEED}" + (f"?{query}" if query else ""))
    assert resp.status_code == 200, resp.text[:300]
    assert resp.headers["Transfer-Encoding"] == "chunked"
    return resp.json()


def ids(body: dict) -> list[str]:
    return [r["__id"] for r in body["value"]]


def test_without_top_a_feed_is_whole_and_has_no_next_link(central: CentralStandIn) -> None:
    made = seed_synthetic(central, FORM, 250, photo_every=0)
    s = session(central)
    whole = feed(s, central, "$expand=*")
    assert ids(whole) == made[::-1] and "@odata.nextLink" not in whole
    assert list(whole) == ["value", "@odata.context"]  # Central's key order
    paged = feed(s, central, "$top=100&$expand=*")
    assert ids(paged) == made[::-1][:100] and "@odata.nextLink" in paged


def test_newest_first_is_by_submission_time_then_arrival(central: CentralStandIn) -> None:
    made = seed_synthetic(central, FORM, 5, photo_every=0)
    subs = central.forms[FORM].by_id
    subs[made[1]].created += timedelta(hours=1)  # submitted later than it arrived
    subs[made[3]].created = subs[made[2]].created  # the same millisecond: arrival decides
    got = ids(feed(session(central), central))
    assert got == [made[1], made[4], made[3], made[2], made[0]]


@pytest.mark.parametrize("same_ms", [False, True], ids=["minutes-apart", "shared-milliseconds"])
def test_a_filter_below_the_last_row_read_gives_the_rest_of_the_feed(
    central: CentralStandIn, same_ms: bool
) -> None:
    made = seed_synthetic(central, FORM, 60, photo_every=0)
    subs = central.forms[FORM].by_id
    if same_ms:  # ten rows to a millisecond, as a burst of uploads can make them
        for i, iid in enumerate(made):
            subs[iid].created = subs[made[i - i % 10]].created
    hwm = "2026-11-29T00:30:00.000Z"
    central.edit(FORM, made[0], note="改")  # an old row edited since: in the feed by updatedAt
    base = f"__system/submissionDate ge {hwm} or __system/updatedAt ge {hwm}"
    s = session(central)
    whole = feed(s, central, f"$expand=*&$filter={quote(base)}")["value"]
    assert whole and made[0] in [r["__id"] for r in whole]
    for k in range(len(whole)):
        until = whole[k]["__system"]["submissionDate"]
        read = {r["__id"] for r in whole[: k + 1] if r["__system"]["submissionDate"] == until}
        where = f"({base}) and __system/submissionDate lt {next_ms(until)}"
        rest = feed(s, central, f"$expand=*&$filter={quote(where)}")["value"]
        assert [r for r in rest if r["__id"] not in read] == whole[k + 1 :]


def skiptoken(iid: str) -> str:
    return quote("01" + base64.b64encode(json.dumps({"instanceId": iid}).encode()).decode())


def test_a_skiptoken_joins_on_its_row_deleted_or_not(central: CentralStandIn) -> None:
    made = seed_synthetic(central, FORM, 6, photo_every=0)
    s = session(central)
    central.delete(FORM, made[3])
    after = feed(s, central, f"$top=2&$skiptoken={skiptoken(made[3])}")
    assert ids(after) == [made[2], made[1]]  # the deleted row still marks the place
    gone = feed(s, central, f"$top=2&$skiptoken={skiptoken('uuid:purged')}")
    assert gone["value"] == [] and "@odata.nextLink" not in gone  # looks like the end
    bad = s.get(f"{central.url}{FEED}?$top=2&$skiptoken=garbage")
    assert (bad.status_code, bad.json()["code"]) == (400, 400.35)  # recorded: 84
    piles = s.get(f"{central.url}{FEED}.piles?$top=2&$skiptoken=" + quote("01" + base64.b64encode(b'{"repeatId":"x"}').decode()))  # fmt: skip
    assert (piles.status_code, piles.json()["code"]) == (400, 400.34)


def test_a_feed_streams_the_recorded_rows_as_node_writes_them() -> None:
    with CentralStandIn() as server:
        server.load_recorded(CENTRAL_FIXTURES)
        s = session(server)
        resp = s.get(f"{server.url}/v1/projects/1/forms/sanitation_sweep.svc/Submissions")
        recorded = json.loads((CENTRAL_FIXTURES / "39_odata_submissions.json").read_text("utf-8"))
        assert resp.content.startswith(b'{"value":[{"') and b'", "' not in resp.content
        assert [r["__id"] for r in resp.json()["value"]] == [
            r["__id"] for r in recorded["response"]["body"]["value"]
        ]


def test_costs_make_it_answer_at_a_real_centrals_pace(central: CentralStandIn) -> None:
    """Lower bounds only: each cost is a wait the stand-in adds."""
    seed_synthetic(central, FORM, 100, photo_every=0)
    s = session(central)
    central.costs.round_trip_s = 0.05
    started = time.monotonic()
    for _ in range(3):
        s.get(f"{central.url}/v1/projects/1/forms/{FORM}/versions")
    assert time.monotonic() - started >= 3 * 0.05
    central.costs.round_trip_s, central.costs.page_s, central.costs.rows_per_s = 0, 0.3, 0
    started = time.monotonic()
    feed(s, central)  # unpaged: no count
    unpaged = time.monotonic() - started
    started = time.monotonic()
    feed(s, central, "$top=1000")  # paged: Central counts the rows first
    assert time.monotonic() - started >= 0.3 > unpaged
    central.costs.page_s, central.costs.rows_per_s = 0, 400
    started = time.monotonic()
    assert len(feed(s, central, "$expand=*")["value"]) == 100
    assert time.monotonic() - started >= 100 / 400
