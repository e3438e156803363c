"""Three replicas behind HAProxy under mixed load; one is SIGKILLed mid-load and restarted.

One PostgreSQL database, one Redis, three ``novaza serve`` processes (each with its own data
dir) and Debian's HAProxy in front: HTTP round robin checked on ``/health/ready``, MLLP in TCP
mode. For ``LOAD_SECONDS`` (30) clients drive whoami, STOW/QIDO/WADO, patient records, ORU sends
(delivered to a real MLLP receiver), Desk syncs and billing reads over HTTP, ADT/ORM over MLLP,
a second tenant past its shared rate limit, and a third tenant that gets suspended. Replica r1
is SIGKILLed at 10 s and restarted. Then, asserted (and printed): no ACKed HL7 message lost or
processed twice; every ORU delivered at least once (duplicates counted); every stored study
retrievable from every replica; the shared limit admitted at most limit + 1%; metered usage
equals the admitted requests up to the killed replica's unflushed window (measured, bounded);
the suspension refused on every replica within 1 s; no 5xx but the killed replica's in-flight
requests.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import cluster as clusters
from tests.conftest import need
from tests.hl7.corpus import HL7_SETTINGS, fixture
from tests.hl7.receiver import ScriptedReceiver
from tests.replica_load import (
    AREAS,
    NOT_ADMITTED,
    Call,
    Load,
    MllpSender,
    call,
    hammer,
    http_worker,
)

LOAD_SECONDS = float(os.environ.get("NOVAZA_TEST_REPLICAS_SECONDS", "30"))
KILL_AT, RESTART_AT, SUSPEND_AT = LOAD_SECONDS / 3, LOAD_SECONDS / 2, LOAD_SECONDS * 0.8
FLUSH_SECONDS = 1.0
# a SIGKILL loses what the replica recorded since its last flush: one interval, plus the flush's
# own time and event-loop delay on a starved machine (docs/billing.md measured up to 2.5)
LOSS_WINDOW_FLUSHES = 3
RATE, BURST = 10.0, 10
VICTIM = 1  # r1 is killed
SETTINGS = {
    "billing_flush_interval_seconds": str(FLUSH_SECONDS),
    # the shared limit is what is measured: a slow Redis answer must not flip to local
    "ratelimit_redis_timeout_ms": "250",
    # only the Redis announcement can make a suspension visible within 1 s
    "tenant_cache_ttl_seconds": "60",
    "hl7_ack_timeout_seconds": "1",
    "hl7_outbox_poll_seconds": "0.2",
    "hl7_outbox_backoff_seconds": "0.2",
    "hl7_outbox_backoff_max_seconds": "1",
}


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, redis_url: str) -> Any:
    need(Path(clusters.HAPROXY).exists(), "haproxy is not installed (Debian package haproxy)")
    with clusters.running(tmp_path, pg_url, redis_url, 3, **SETTINGS) as running:
        yield running


def test_three_replicas_behind_haproxy_survive_a_sigkill(
    cluster: clusters.Cluster, pg_url: str
) -> None:
    with clusters.balanced(cluster) as proxy:
        report = asyncio.run(scenario(cluster, proxy, pg_url))
    logged = proxy.requests()
    proxy_5xx = [r for r in logged if r[1] >= 500]
    print_report(report, proxy_5xx)
    print("HAProxy abnormal terminations:", [r for r in logged if r[2] != "----"])
    check(report, proxy_5xx)


# ----------------------------------------------------------------------------- the run


async def setup_tenants(cluster: clusters.Cluster, base: str, receiver_port: int) -> dict[str, str]:
    destinations = {"ris": {"host": "127.0.0.1", "port": receiver_port}}
    hl7 = {**HL7_SETTINGS, "destinations": destinations, "defaultDestination": "ris"}
    unlimited = {"ratePerSecond": 100_000, "burst": 100_000}
    suffix = uuid.uuid4().hex[:6]
    slugs = {"main": f"acme-{suffix}", "limited": f"rl-{suffix}", "suspended": f"sus-{suffix}"}
    ids = {}
    addons = ["medical_imaging", "hl7_fhir", "emr"]
    created = await asyncio.to_thread(
        cluster.create_tenant,
        base,
        slugs["main"],
        plan="enterprise",
        addons=addons,
        settings={"hl7": hl7},
        rateLimit=unlimited,
    )
    ids["main"] = created["id"]
    for role, limit in [
        ("limited", {"ratePerSecond": RATE, "burst": BURST}),
        ("suspended", unlimited),
    ]:
        created = await asyncio.to_thread(cluster.create_tenant, base, slugs[role], rateLimit=limit)
        ids[role] = created["id"]
    return {**{f"{k}_slug": v for k, v in slugs.items()}, **ids}


async def scenario(
    cluster: clusters.Cluster, proxy: clusters.HaProxy, pg_url: str
) -> dict[str, Any]:
    load, report = Load(), {}
    victim = cluster.replicas[VICTIM]
    async with (
        ScriptedReceiver() as receiver,
        httpx.AsyncClient(
            base_url=proxy.url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as client,
    ):
        tenants = await setup_tenants(cluster, proxy.url, receiver.port)
        main = cluster.auth(tenants["main_slug"])
        # the patient and order every ORU reports on (billed as hl7 requests: recorded)
        for name, path in [("adt_a01_v251_epic.hl7", "adt"), ("orm_o01_nw_v251_epic.hl7", "orm")]:
            answer = await call(
                load,
                client,
                "hl7-http",
                "POST",
                f"/med/hl7/{path}",
                content=fixture(name),
                headers={**main, "Content-Type": "application/hl7-v2"},
            )
            assert answer is not None and answer.status_code == 200, answer and answer.text
        begin = time.monotonic()
        until = begin + LOAD_SECONDS
        events: dict[str, float] = {}
        restarted = asyncio.Event()
        tasks = [
            *(http_worker(load, client, main, until, 0.02, n) for n in range(4)),
            *(MllpSender(load, proxy.mllp_port, f"E{n}").run(until, 0.01) for n in range(2)),
            *(
                hammer(load, client, "limited", cluster.auth(tenants["limited_slug"]), until)
                for _ in range(2)
            ),
            hammer(load, client, "suspended", cluster.auth(tenants["suspended_slug"]), until),
            chaos(victim, begin, events, restarted),
            suspend_at(
                cluster, proxy, tenants["suspended_slug"], begin + SUSPEND_AT, restarted, report
            ),
        ]
        await asyncio.gather(*tasks)
        report["load_seconds"] = time.monotonic() - begin
        report["delivery_wait"] = await wait_delivered(receiver, load.orus, 60)
        report["retrievable"] = await retrievable_everywhere(cluster, load, main)
        await asyncio.sleep(3 * FLUSH_SECONDS + 1)  # every replica flushed and relayed its usage
        report["received"] = receiver.control_ids()
    report.update(events=events, load=load, tenants=tenants)
    report["db"] = await read_database(pg_url, tenants)
    return report


async def chaos(
    victim: clusters.Replica, begin: float, events: dict[str, float], restarted: asyncio.Event
) -> None:
    await asyncio.sleep(begin + KILL_AT - time.monotonic())
    events["kill"] = time.monotonic()
    await asyncio.to_thread(victim.kill)
    events["dead"] = time.monotonic()  # reaped: from here on nothing reaches it
    await asyncio.sleep(begin + RESTART_AT - time.monotonic())
    events["restart"] = time.monotonic()
    await asyncio.to_thread(victim.start)
    events["ready"] = time.monotonic()
    restarted.set()


async def suspend_at(
    cluster: clusters.Cluster,
    proxy: clusters.HaProxy,
    slug: str,
    at: float,
    restarted: asyncio.Event,
    report: dict[str, Any],
) -> None:
    """Suspend through HAProxy (once every replica serves again); then how long until each
    replica, asked directly, refuses."""
    await restarted.wait()
    await asyncio.sleep(at - time.monotonic())
    headers = cluster.auth(slug)
    async with httpx.AsyncClient(timeout=10) as direct:
        for replica in cluster.replicas:  # each has the tenant cached as active (60 s TTL)
            answer = await direct.get(f"{replica.url}/api/v1/whoami", headers=headers)
            assert answer.status_code == 200, (replica.name, answer.text)
        sent = time.monotonic()
        answer = await direct.post(
            f"{proxy.url}/admin/tenants/{slug}/suspend", headers=cluster.auth(None)
        )
        answered = time.monotonic()
        assert answer.status_code == 200, answer.text

        async def refused_after(replica: clusters.Replica) -> tuple[float, str]:
            while True:
                got = await direct.get(f"{replica.url}/api/v1/whoami", headers=headers)
                waited = time.monotonic() - answered
                if got.status_code != 200 or waited > 5:
                    code = got.json().get("code", "") if got.status_code != 200 else "still 200"
                    return waited, code
                await asyncio.sleep(0.01)

        seen = await asyncio.gather(*(refused_after(r) for r in cluster.replicas))
    report["suspend_call"] = answered - sent
    report["suspend_seen"] = {r.name: s for r, s in zip(cluster.replicas, seen, strict=True)}


async def wait_delivered(receiver: ScriptedReceiver, queued: list[str], timeout: float) -> float:
    begin = time.monotonic()
    while time.monotonic() - begin < timeout:
        if set(queued) <= set(receiver.control_ids()):
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - begin


async def retrievable_everywhere(
    cluster: clusters.Cluster, load: Load, headers: dict[str, str]
) -> dict[str, list[str]]:
    """Each stored study's instances (the archived bytes) asked from each replica directly:
    the studies each replica could not return."""
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    missing: dict[str, list[str]] = {}
    async with httpx.AsyncClient(timeout=30) as direct:
        for replica in cluster.replicas:
            missing[replica.name] = []
            for study in load.studies:
                answer = await call(
                    load, direct, "retrieve", "GET", f"{replica.url}/med/wado/studies/{study}",
                    server=replica.name, headers={**headers, **accept},
                )  # fmt: skip
                if answer is None or answer.status_code != 200 or b"DICM" not in answer.content:
                    missing[replica.name].append(study)  # None: cut short mid-body
    return missing


async def read_database(pg_url: str, tenants: dict[str, str]) -> dict[str, Any]:
    conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        main = tenants["main"]
        inbound = await conn.fetch(
            "SELECT id, control_id, status FROM hl7_inbound_messages WHERE tenant_id = $1", main
        )
        audits = await conn.fetch(
            "SELECT resource_id, count(*) AS n FROM audit_events WHERE tenant_id = $1"
            " AND resource_type = 'hl7_message' AND (action LIKE 'hl7.adt.%' OR action LIKE"
            " 'hl7.orm.%') GROUP BY resource_id",
            main,
        )
        orders = await conn.fetch(
            "SELECT placer_order_number, count(*) AS n FROM clinical_orders WHERE tenant_id = $1"
            " GROUP BY placer_order_number",
            main,
        )
        usage = await conn.fetch(
            "SELECT meter, dimensions, sum(quantity) AS q FROM billing_usage_hourly"
            " WHERE tenant_id = $1 GROUP BY meter, dimensions",
            main,
        )
    finally:
        await conn.close()
    return {
        "inbound": [(r["id"], r["control_id"], r["status"]) for r in inbound],
        "audits": {r["resource_id"]: r["n"] for r in audits},
        "orders": {r["placer_order_number"]: r["n"] for r in orders},
        "usage": {(r["meter"], r["dimensions"]): int(r["q"]) for r in usage},
    }


# ----------------------------------------------------------------------------- the verdict


def metering(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per billed area: admitted by the clients' count, metered, the loss, its bound (the killed
    replica's admitted requests in the LOSS_WINDOW_FLUSHES flush intervals before the kill) and
    the window the loss actually spans (seconds before the kill that hold as many of them)."""
    load: Load = report["load"]
    kill = report["events"]["kill"]
    victim = f"r{VICTIM}"
    out = {}
    for area in sorted({a for a in AREAS.values() if a}):
        admitted = load.admitted(area)
        metered = report["db"]["usage"].get(("api_requests", f"area={area}"), 0)
        window = load.admitted(area, until=kill, server=victim) - load.admitted(
            area, until=kill - LOSS_WINDOW_FLUSHES * FLUSH_SECONDS, server=victim
        )
        before_kill = sorted(
            (c.ended for c in load.calls if c.server == victim and c.ended <= kill
             and AREAS[c.route] == area and 0 < c.status < 500 and c.status not in NOT_ADMITTED),
            reverse=True,
        )  # fmt: skip
        lost = admitted - metered
        spans = kill - before_kill[lost - 1] if 0 < lost <= len(before_kill) else 0.0
        unanswered = sum(1 for c in load.calls if AREAS[c.route] == area and not 0 < c.status < 500)
        out[area] = {
            "admitted": admitted,
            "metered": metered,
            "lost": lost,
            "bound": window,
            "loss_window_s": round(spans, 2),
            "unanswered": unanswered,
        }
    return out


def print_report(report: dict[str, Any], proxy_5xx: list[Any]) -> None:
    load: Load = report["load"]
    events = report["events"]
    print(
        f"\nload {report['load_seconds']:.1f}s; r{VICTIM} SIGKILLed at {KILL_AT:.0f}s, "
        f"restarted at {RESTART_AT:.0f}s, ready after {events['ready'] - events['restart']:.1f}s"
    )
    print("HTTP answers by route and status:", dict(sorted(load.statuses().items())))
    print("served by:", dict(Counter(c.server for c in load.calls)))
    print(
        f"HL7 over MLLP: {len(load.hl7_kinds)} sent, {len(load.hl7_acked)} ACKed, "
        f"{load.hl7_dropped} connections dropped before an ACK, {load.hl7_resends} resends"
    )
    received = report["received"]
    print(
        f"ORU: {len(load.orus)} queued, {len(set(received))} delivered after "
        f"{report['delivery_wait']:.1f}s, {len(received) - len(set(received))} duplicates"
    )
    print(
        f"studies stored: {len(load.studies)}; not retrievable: "
        f"{ {k: len(v) for k, v in report['retrievable'].items()} }"
    )
    limited = [c for c in load.calls if c.route == "limited"]
    elapsed = max(c.ended for c in limited) - min(c.began for c in limited)
    print(
        f"rate limit: {sum(c.status == 200 for c in limited)} of {len(limited)} admitted in "
        f"{elapsed:.1f}s, bound {BURST + RATE * elapsed:.0f}"
    )
    print(
        f"suspend answered in {report['suspend_call'] * 1000:.0f} ms; refused after (ms): "
        f"{ {k: round(v[0] * 1000) for k, v in report['suspend_seen'].items()} }"
    )
    print(f"r{VICTIM} reaped {(events['dead'] - events['kill']) * 1000:.0f} ms after the SIGKILL")
    print("metering:", metering(report))
    kill = report["events"]["kill"]
    failed = failures(load)
    in_flight = sum(in_flight_at_kill(c, events, f"r{VICTIM}") for c in failed)
    print(
        f"failures: {len(failed)} ({in_flight}"
        f" in flight on r{VICTIM} at the kill), (route, status, replica, sent and ended in s"
        " after the kill):",
        [
            (c.route, c.status, c.server, round(c.began - kill, 3), round(c.ended - kill, 3))
            for c in failed
        ],
    )
    print("requests without an HTTP answer:", dict(Counter(load.errors)))
    print(f"5xx at HAProxy: {len(proxy_5xx)}:", proxy_5xx)


def check(report: dict[str, Any], proxy_5xx: list[Any]) -> None:
    load: Load = report["load"]
    db = report["db"]
    victim = f"r{VICTIM}"
    # HL7: every ACKed message stored once, processed once (one audit record, one order per NW)
    assert not load.hl7_nacks, load.hl7_nacks[:5]
    stored = Counter(cid for _, cid, _ in db["inbound"])
    assert len(load.hl7_acked) > 100, "too little HL7 traffic to prove anything"
    assert set(load.hl7_acked) <= set(stored), set(load.hl7_acked) - set(stored)
    assert max(stored.values()) == 1
    assert {status for _, cid, status in db["inbound"] if cid in load.hl7_acked} == {"processed"}
    processed = {mid for mid, cid, _ in db["inbound"] if cid in load.hl7_acked}
    assert {mid: db["audits"].get(mid, 0) for mid in processed} == dict.fromkeys(processed, 1)
    orms = {f"P{cid}" for cid in load.hl7_acked if load.hl7_kinds[cid] == "ORM"}
    assert {p: db["orders"].get(p, 0) for p in orms} == dict.fromkeys(orms, 1)
    # ORU: every queued one delivered at least once
    assert load.orus, "no ORU was queued"
    assert set(load.orus) <= set(report["received"]), set(load.orus) - set(report["received"])
    # the shared rate limit, across the three replicas
    limited = [c for c in load.calls if c.route == "limited"]
    elapsed = max(c.ended for c in limited) - min(c.began for c in limited)
    admitted = sum(c.status == 200 for c in limited)
    assert admitted <= (BURST + RATE * elapsed) * 1.01 + 1
    assert any(c.status == 429 for c in limited), "the limit was never reached: nothing proven"
    # one limit shared, not one per replica: the admitted requests were spread over them
    assert {c.server for c in limited if c.status == 200} >= {"r0", "r2"}
    # the suspension: refused on every replica within 1 s of the answer
    for name, (waited, code) in report["suspend_seen"].items():
        assert code == "TENANT_SUSPENDED", (name, code)
        assert waited <= 1.0, (name, waited)
    # 5xx (or no answer): only requests in flight on the killed replica at the kill
    unexplained = [c for c in failures(load) if not in_flight_at_kill(c, report["events"], victim)]
    assert not unexplained, unexplained[:5]
    assert not [r for r in proxy_5xx if r[0] != victim], proxy_5xx
    # metered usage equals admitted requests, but for the killed replica's unflushed window
    for area, m in metering(report).items():
        assert -m["unanswered"] <= m["lost"] <= m["bound"], (area, m)
    # the shared archive: every stored study from every replica
    assert load.studies, "no study was stored"
    missing = {k: len(v) for k, v in report["retrievable"].items() if v}
    assert not missing, missing


def failures(load: Load) -> list[Call]:
    return [c for c in load.calls if c.status >= 500 or c.status == 0]


def in_flight_at_kill(c: Call, events: dict[str, float], victim: str) -> bool:
    """Sent before the victim was gone, answered (or cut) after the SIGKILL, by the victim (a
    request with no answer at all has no name)."""
    return c.server in {victim, ""} and c.began <= events["dead"] and c.ended >= events["kill"]
