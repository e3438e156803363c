"""The mixed load the replica scenario drives through HAProxy, and what it counts.

HTTP workers cycle through the routes one tenant uses (whoami, STOW, QIDO, WADO, patient
records, ORU send, Desk sync, billing reads) and record every answer with the replica that served
it; MLLP senders stream ADT^A08 and ORM^O01 NW through HAProxy's TCP frontend, one message in
flight, and resend a message whose connection dropped before its ACK, as interface engines do.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from novaza_gateway.hl7.mllp import MllpDecoder, frame
from tests.imaging.dicom import make_instance, multipart, uid

A08 = (
    "MSH|^~\\&|EPIC|STMARYS|NOVAZA|RADIOLOGY|20260303140211||ADT^A08^ADT_A01|{cid}|P|2.5.1\r"
    "EVN|A08|20260303140200\r"
    "PID|1||{mrn}^^^STMARYS^MR||Doe^Jane^A||19700101|F|||{n} Main St^^Boston^MA^02110\r"
    "PV1|1|O|RAD^^^STMARYS|||||||||||||||OP\r"
)
ORM = (
    "MSH|^~\\&|EPIC|STMARYS|NOVAZA|RADIOLOGY|20260301094500||ORM^O01^ORM_O01|{cid}|P|2.5.1\r"
    "PID|1||{mrn}^^^STMARYS^MR||Doe^Jane^A||19700101|F\r"
    "ORC|NW|P{cid}|F{cid}||SC||^^^20260301110000||20260301094500|||1234^Kaur^Priya\r"
    "OBR|1|P{cid}|F{cid}|CT-CHEST^CT chest^LOCAL|||20260301094500|||||||||1234^Kaur^Priya||"
    "A{cid}|||||CT|||^^^20260301110000\r"
)
ORU_BODY = {
    "patient": {"identifier": "100234", "assigningAuthority": "STMARYS"},
    "order": {"accessionNumber": "ACC7001"},
    "resultStatus": "F",
    "observations": [{"code": "IMP", "valueType": "TX", "value": "no acute findings"}],
}
# the area each route is billed to (api_requests); None: not billed
AREAS = {
    "whoami": None,
    "stow": "imaging",
    "qido": "imaging",
    "wado": "imaging",
    "patient": "patients",
    "oru": "hl7",
    "desk": "desk",
    "usage": None,
    "hl7-http": "hl7",
    "retrieve": "imaging",
    "limited": None,
    "suspended": None,
}
NOT_ADMITTED = {401, 403, 429}


@dataclass
class Call:
    route: str
    status: int  # 0: no HTTP answer at all (transport error)
    server: str
    began: float
    ended: float


@dataclass
class Load:
    """What the clients saw; times are ``time.monotonic()``."""

    calls: list[Call] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    orus: list[str] = field(default_factory=list)
    hl7_acked: dict[str, float] = field(default_factory=dict)  # control id -> ACK time
    hl7_kinds: dict[str, str] = field(default_factory=dict)  # control id -> ADT | ORM
    hl7_resends: int = 0
    hl7_dropped: int = 0
    hl7_nacks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # requests that got no HTTP answer

    def record(
        self, route: str, began: float, answer: httpx.Response | None, server: str = ""
    ) -> None:
        status = answer.status_code if answer is not None else 0
        if answer is not None:
            server = answer.headers.get("x-served-by", server)
        self.calls.append(Call(route, status, server, began, time.monotonic()))

    def admitted(self, area: str, until: float | None = None, server: str | None = None) -> int:
        """Metered calls the gateway admitted (answered, not refused by the guard)."""
        return sum(
            1
            for c in self.calls
            if AREAS[c.route] == area
            and c.status
            and c.status < 500
            and c.status not in NOT_ADMITTED
            and (server is None or c.server == server)
            and (until is None or c.ended <= until)
        )

    def statuses(self) -> Counter[tuple[str, int]]:
        return Counter((c.route, c.status) for c in self.calls)


async def call(
    load: Load,
    client: httpx.AsyncClient,
    route: str,
    method: str,
    path: str,
    server: str = "",
    **kw: Any,
) -> httpx.Response | None:
    """One request, recorded; ``server`` names the replica when the client asks it directly."""
    began = time.monotonic()
    try:
        answer = await client.request(method, path, **kw)
    except httpx.HTTPError as error:
        load.record(route, began, None, server)
        load.errors.append(f"{route}: {type(error).__name__}: {error}")
        return None
    load.record(route, began, answer, server)
    return answer


async def http_worker(
    load: Load,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    until: float,
    pause: float,
    worker: int,
) -> None:
    """One user of the tenant: a fixed cycle of routes until ``until``."""
    steps = itertools.cycle(["whoami", "stow", "qido", "wado", "patient", "oru", "desk", "usage"])
    n = 0
    while time.monotonic() < until:
        step = next(steps)
        n += 1
        if step == "whoami":
            await call(load, client, step, "GET", "/api/v1/whoami", headers=headers)
        elif step == "stow":
            study = uid()
            body, content_type = multipart([make_instance(study=study, patient_id="PAT-R")])
            answer = await call(
                load,
                client,
                step,
                "POST",
                "/med/stow/studies",
                content=body,
                headers={
                    **headers,
                    "Content-Type": content_type,
                    "Accept": "application/dicom+json",
                },
            )
            if answer is not None and answer.status_code == 200:
                load.studies.append(study)
        elif step == "qido":
            params = {"StudyInstanceUID": load.studies[-1]} if load.studies else {}
            await call(
                load, client, step, "GET", "/med/qido/studies", params=params, headers=headers
            )
        elif step == "wado" and load.studies:
            study = random.choice(load.studies)
            await call(
                load, client, step, "GET", f"/med/wado/studies/{study}/metadata", headers=headers
            )
        elif step == "patient":
            await call(load, client, step, "GET", "/med/patient/PAT-R/studies", headers=headers)
        elif step == "oru":
            answer = await call(
                load, client, step, "POST", "/med/hl7/send-oru", json=ORU_BODY, headers=headers
            )
            if answer is not None and answer.status_code == 202:
                load.orus.append(answer.json()["controlId"])
        elif step == "desk":
            contact = {
                "externalId": f"ext-{worker}-{n % 50}",
                "name": {"given": "Ada", "family": f"L{n}"},
            }
            await call(
                load,
                client,
                step,
                "POST",
                "/med/desk/contacts/sync",
                json={"contacts": [contact]},
                headers=headers,
            )
        elif step == "usage":
            await call(load, client, step, "GET", "/api/v1/billing/usage", headers=headers)
        await asyncio.sleep(pause)


async def hammer(
    load: Load, client: httpx.AsyncClient, route: str, headers: dict[str, str], until: float
) -> None:
    """whoami as fast as answers come back (a tenant over its rate limit)."""
    while time.monotonic() < until:
        await call(load, client, route, "GET", "/api/v1/whoami", headers=headers)


class MllpSender:
    """One interface engine: ADT A08 and ORM NW over MLLP through HAProxy, one in flight; a
    message whose connection drops before its ACK is sent again on a new connection."""

    def __init__(self, load: Load, port: int, name: str) -> None:
        self.load, self.port, self.name = load, port, name
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def run(self, until: float, pause: float) -> None:
        try:
            for n in itertools.count():
                if time.monotonic() >= until:
                    return
                cid = f"{self.name}{n:06d}"
                kind = "ADT" if n % 2 else "ORM"
                template = A08 if kind == "ADT" else ORM
                payload = template.format(cid=cid, mrn=f"M{n % 20}", n=n).encode()
                self.load.hl7_kinds[cid] = kind
                await self.deliver(cid, payload)
                await asyncio.sleep(pause)
        finally:
            self.close()

    async def deliver(self, cid: str, payload: bytes) -> None:
        for attempt in itertools.count():
            if attempt:
                self.load.hl7_resends += 1
                await asyncio.sleep(0.2)
            try:
                ack = await self.exchange(payload)
            except (OSError, TimeoutError):
                self.load.hl7_dropped += 1
                self.close()
                continue
            if f"MSA|AA|{cid}" not in ack:
                self.load.hl7_nacks.append(cid)
            self.load.hl7_acked[cid] = time.monotonic()
            return

    async def exchange(self, payload: bytes) -> str:
        if self.conn is None:
            self.conn = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.conn
        writer.write(frame(payload))
        await writer.drain()
        decoder = MllpDecoder(1 << 20)
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            if not chunk:
                raise ConnectionError("closed before the ACK")
            if acks := decoder.feed(chunk):
                return acks[0].decode(errors="replace")

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None
