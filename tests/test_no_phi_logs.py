"""No PHI, no secret in any log line, at any level, on either store.

A real ``novaza serve`` (INFO and DEBUG; SQLite and PostgreSQL) gets traffic marked with
unique strings: a patient's name and MRN in an HL7 ADT, Desk contacts (one whose display
name is too long for its column: PostgreSQL refuses the statement; one with a NUL), a
tenant's Desk API key and imaging password, a Desk upstream whose URL carries a token (the
push fails and is retried), an AI prompt, and the bearer tokens themselves. Its whole
stderr must hold none of them.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from novaza_gateway.core import accesslog, devkeys
from novaza_gateway.core.logging import (
    QUIET_LOGGERS,
    JsonFormatter,
    TextFormatter,
    configure_logging,
)
from novaza_gateway.core.policy import ADMIN_SCOPE, TENANT_SCOPES
from tests import procs
from tests.conftest import free_port

ADT = (
    "MSH|^~\\&|EPIC|STMARYS|NOVAZA|RADIOLOGY|20260301083000-0500||ADT^A01^ADT_A01|{control}|P|2.5.1\r"
    "EVN|A01|20260301083000-0500\r"
    "PID|1||{mrn}^^^STMARYS^MR||{family}^{given}||19580412|F\r"
    "PV1|1|I|4WEST^412^B^STMARYS\r"
)


class Markers:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:12].upper()
        self.family = f"PHIFAMILY{tag}"
        self.given = f"PHIGIVEN{tag}"
        self.mrn = f"MRN{tag}"
        self.contact = f"PHICONTACT{tag}"
        self.email = f"phimail{tag.lower()}@example.org"
        self.prompt = f"PHIPROMPT{tag}"
        self.desk_key = f"DESKKEY{tag}"
        self.imaging_password = f"IMGPW{tag}"
        self.url_token = f"URLTOKEN{tag}"

    def all(self) -> dict[str, str]:
        return dict(vars(self))


def _tokens(data_dir: Path) -> tuple[str, str]:
    tenant = devkeys.mint_token(
        data_dir, subject="user-phi", scopes=TENANT_SCOPES, tenant="phi", ttl_seconds=3600
    )
    admin = devkeys.mint_token(data_dir, subject="admin-phi", scopes=[ADMIN_SCOPE], tenant=None)
    return tenant, admin


def drive(url: str, marks: Markers, tenant_token: str, admin_token: str) -> dict[str, int]:
    """The traffic; returns the statuses seen, for the test to check it ran as meant."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    user = {"Authorization": f"Bearer {tenant_token}"}
    seen: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        created = http.post(
            "/admin/tenants/",
            json={"slug": "phi", "name": "Phi", "plan": "enterprise", "status": "active"},
            headers=admin,
        )
        seen["create"] = created.status_code
        upstream = f"http://127.0.0.1:{free_port()}/{marks.url_token}/"  # nothing listens
        settings = {
            "desk": {"baseUrl": upstream, "apiKey": marks.desk_key},
            "imaging": {
                "upstreamUrl": f"http://127.0.0.1:{free_port()}/dicom-web",
                "upstreamUsername": "gateway",
                "upstreamPassword": marks.imaging_password,
            },
        }
        seen["settings"] = http.put(
            "/admin/tenants/phi", json={"settings": settings}, headers=admin
        ).status_code
        adt = ADT.format(control=uuid.uuid4().hex[:20], **vars(marks))
        seen["adt"] = http.post(
            "/med/hl7/adt",
            content=adt.encode(),
            headers={**user, "Content-Type": "application/hl7-v2"},
        ).status_code
        contact = {
            "externalId": f"ext-{marks.mrn}",
            "name": {"given": marks.contact, "family": marks.family},
            "emails": [marks.email],
        }
        seen["sync"] = http.post(
            "/med/desk/contacts/sync", json={"contacts": [contact]}, headers=user
        ).status_code
        nul = {**contact, "externalId": f"nul-{marks.mrn}"}
        nul["name"] = {"given": f"{marks.contact}\u0000", "family": marks.family}
        seen["sync_nul"] = http.post(
            "/med/desk/contacts/sync", json={"contacts": [nul]}, headers=user
        ).status_code
        # given + family fit their columns (255); the display name made of both does not:
        # PostgreSQL refuses the statement (22001), with the names in its parameters
        long = {**contact, "externalId": f"long-{marks.mrn}"}
        long["name"] = {
            "given": marks.contact.ljust(200, "G"),
            "family": marks.family.ljust(200, "F"),
        }
        seen["sync_long"] = http.post(
            "/med/desk/contacts/sync", json={"contacts": [long]}, headers=user
        ).status_code
        seen["contacts"] = http.get(
            "/med/desk/contacts", params={"externalId": f"ext-{marks.mrn}"}, headers=user
        ).status_code
        seen["chat"] = http.post(
            "/ai/chat/completions",
            json={
                "model": "smollm2-135m-instruct",
                "messages": [{"role": "user", "content": f"Say hi to {marks.prompt}"}],
                "max_tokens": 2,
            },
            headers=user,
        ).status_code
        seen["refused"] = http.get(
            "/api/v1/whoami", headers={"Authorization": f"Bearer {tenant_token}x"}
        ).status_code
        time.sleep(1.5)  # the Desk outbox tries its upstream (poll 0.2 s) and logs the failure
    return seen


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_no_marker_reaches_the_logs(tmp_path: Path, db_url: str, level: str) -> None:
    marks = Markers()
    data_dir = tmp_path / "data"
    postgres = db_url.startswith("postgres")
    env = procs.novaza_env(
        data_dir,
        db_url,
        log_level=level,
        desk_outbox_poll_seconds="0.2",
        desk_outbox_backoff_seconds="0.2",
    )
    tenant_token, admin_token = _tokens(data_dir)
    with procs.serving(env) as server:
        seen = drive(server.url, marks, tenant_token, admin_token)
    text = server.stderr()
    lines = server.log_lines()  # also: every line is JSON

    assert seen["create"] == 201 and seen["settings"] == 200, seen
    assert seen["adt"] in (200, 422) and seen["sync"] == seen["contacts"] == 200, seen
    assert seen["chat"] in (200, 503), seen  # 503: the model cannot load here; still logged
    assert seen["refused"] == 401
    assert seen["sync_nul"] in (200, 400, 422), seen  # 400: edge validation refuses NUL
    if postgres and seen["sync_long"] == 422:  # the failing statement ran and was logged
        refused = [line for line in lines if line.get("msg") == "database refused a value"]
        assert refused and refused[0].get("sqlstate") == "22001", seen
    else:
        assert seen["sync_long"] == 200, seen
    if level == "DEBUG":
        assert any(line["level"] == "debug" for line in lines) or lines, "no log at all"

    for name, marker in marks.all().items():
        assert marker not in text, f"{name} reached the logs"
        assert marker.lower() not in text.lower(), f"{name} reached the logs (case folded)"
    for secret in (tenant_token, admin_token):
        assert secret not in text
        assert secret.rsplit(".", 1)[1] not in text  # not even the signature
    # none of the gateway's own lines is a trace (SQLAlchemy's pool may log one, message
    # withheld, when shutdown cancels a connection's reset)
    assert not [line for line in lines if "exc" in line and line["logger"].startswith("novaza")]


def test_a_logged_exception_shows_frames_and_classes_never_messages() -> None:
    """What ``log.exception`` writes, in both formats: where, and what class, not what."""

    def parse_pid(value: str) -> None:
        raise ValueError(f"bad PID-5: {value}")

    name, mrn = f"PHIMARKER{uuid.uuid4().hex}^Jane", f"PHIMRN{uuid.uuid4().hex}"
    try:
        try:
            parse_pid(name)
        except ValueError as exc:
            raise RuntimeError(f"while handling MRN {mrn}") from exc
    except RuntimeError:
        record = logging.LogRecord("novaza.x", logging.ERROR, __file__, 1, "failed", None, None)
        record.exc_info = sys.exc_info()
    for formatter in (JsonFormatter(), TextFormatter("%(message)s")):
        text = formatter.format(record)
        assert name not in text and mrn not in text
        assert "parse_pid" in text  # the frames are there
        assert "builtins.ValueError: <message withheld>" in text
        assert "builtins.RuntimeError: <message withheld>" in text


def test_library_loggers_stay_at_warning_unless_log_sql() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("DEBUG", json=True)
        for name in ("sqlalchemy.engine.Engine", "aiosqlite", "httpx", "pynetdicom"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger("novaza.db").isEnabledFor(logging.DEBUG)
        configure_logging("DEBUG", json=True, log_sql=True)
        assert logging.getLogger("sqlalchemy.engine.Engine").isEnabledFor(logging.INFO)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    finally:  # undo configure_logging for the rest of the session
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        accesslog.use_json_lines(None)
        root.handlers[:], level = saved
        root.setLevel(level)
