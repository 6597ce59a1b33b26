"""`manyi serve` under load and under a kill: 50 phones sending at once lose nothing and store
nothing twice; a server killed with SIGKILL mid-upload keeps every submission it answered 201
to, and nothing half-written."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipelines.store import Store
from tests.pipelines.server._collect import Collect, CollectError, multipart
from tests.pipelines.server._server import start_server
from tests.pipelines.server.test_openrosa import JPEG, _people, sweep_xml

SENDERS = 50


def _version(built_forms) -> str:
    return next(b.version for b in built_forms.built if b.form_id == "sanitation_sweep")


def _photo(i: int) -> bytes:
    return JPEG + i.to_bytes(4, "big")  # each submission its own photo


def _check_whole(data_dir: Path) -> dict[str, tuple[str, str]]:
    """The store is consistent: every received submission has its record and sender, every
    photo row names a file whose bytes hash to its name. Returns iid → (xml sha, photo sha)."""
    with Store(data_dir / "manyi.sqlite", data_dir) as store:
        db = store.db
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        local = dict(db.execute("SELECT instance_id, xml_sha256 FROM local_submissions"))
        subs = {
            r[0] for r in db.execute("SELECT instance_id FROM submissions WHERE source = 'local'")
        }
        assert set(local) == subs  # no record without its sender, nor the reverse
        photos = {}
        for iid, sha, rel in db.execute("SELECT instance_id, sha256, local_path FROM attachments"):
            assert hashlib.sha256((data_dir / rel).read_bytes()).hexdigest() == sha
            photos[iid] = sha
    return {iid: (local[iid], photos.get(iid)) for iid in local}


def test_fifty_phones_at_once_lose_nothing_and_duplicate_nothing(built_forms, tmp_path) -> None:
    tokens = _people(tmp_path)
    server = start_server(tmp_path, built_forms.out_dir)
    version, per_phone = _version(built_forms), 4
    sent: dict[str, bytes] = {}
    lock = threading.Lock()

    def phone(n: int) -> list[int]:
        statuses = []
        with Collect(f"{server.url}/key/{tokens['cadre']}", device=f"collect:phone{n:011d}") as c:
            for k in range(per_phone):
                iid, photo = f"uuid:{uuid.uuid4()}", _photo(n * 100 + k)
                body, ctype = multipart(
                    sweep_xml(version, iid, photos=("p.jpg",)), {"p.jpg": photo}, "t", False
                )
                statuses.append(c.post(body, ctype).status)
                if k == 0:  # a lost answer: Collect sends the identical bytes again
                    statuses.append(c.post(body, ctype).status)
                with lock:
                    sent[iid] = photo
        return statuses

    try:
        with ThreadPoolExecutor(SENDERS) as pool:
            statuses = [s for result in pool.map(phone, range(SENDERS)) for s in result]
    finally:
        server.stop()
    assert statuses == [201] * (SENDERS * (per_phone + 1))
    stored = _check_whole(tmp_path)
    assert set(stored) == set(sent) and len(stored) == SENDERS * per_phone
    for iid, photo in sent.items():
        assert stored[iid][1] == hashlib.sha256(photo).hexdigest()
    with Store(tmp_path / "manyi.sqlite", tmp_path) as store:
        devices = {
            r[0] for r in store.db.execute("SELECT DISTINCT device_id FROM local_submissions")
        }
        assert len(devices) == SENDERS
        assert store.db.execute("SELECT COUNT(*) FROM attachments").fetchone()[0] == len(sent)


def test_a_server_killed_mid_upload_keeps_every_201_and_nothing_half_written(
    built_forms, tmp_path
) -> None:
    tokens = _people(tmp_path)
    server = start_server(tmp_path, built_forms.out_dir)
    version = _version(built_forms)
    answered: dict[str, int] = {}  # iid → status, for the POSTs that got an answer
    bodies: dict[str, tuple[bytes, str]] = {}
    lock, stop = threading.Lock(), threading.Event()

    def phone(n: int) -> None:
        with Collect(f"{server.url}/key/{tokens['cadre']}", retries=0, timeout=10) as c:
            k = 0
            while not stop.is_set():
                iid = f"uuid:{uuid.uuid4()}"
                big = _photo(n * 10_000 + k) * 10  # ~100 KB: the kill lands mid-body often
                body = multipart(
                    sweep_xml(version, iid, photos=("p.jpg",)), {"p.jpg": big}, "t", False
                )
                with lock:
                    bodies[iid] = body
                try:
                    status = c.post(*body).status
                except CollectError:
                    return  # the server is gone: the phone keeps the form to send later
                with lock:
                    answered[iid] = status
                k += 1

    threads = [threading.Thread(target=phone, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    ok = {iid for iid, status in answered.items() if status == 201}
    assert len(ok) > 20, "the kill came before any upload finished"
    assert set(answered.values()) == {201}

    stored = _check_whole(tmp_path)  # read straight from the files the killed server left
    assert ok <= set(stored)
    server = start_server(tmp_path, built_forms.out_dir, port=server.port)
    try:
        # The phones send again whatever got no answer: each lands once.
        with Collect(f"{server.url}/key/{tokens['cadre']}") as c:
            for iid in set(bodies) - ok:
                assert c.post(*bodies[iid]).status == 201
    finally:
        server.stop()
    after = _check_whole(tmp_path)
    assert set(after) == set(bodies)
    assert all(photo is not None for _, photo in after.values())
