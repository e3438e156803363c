"""No alias of one upstream lets a second tenant claim it (issue 11: the one-upstream-per-tenant
guard was bypassed by ``0.0.0.0``, a doubled slash, ``%2F`` and ``%64icom-web``)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from novaza_gateway.imaging.upstream_key import UpstreamKey
from tests.conftest import Gateway
from tests.imaging.conftest import imaging_tenant

PORT = 8042
ROOT = f"http://127.0.0.1:{PORT}/dicom-web"


def aliases() -> list[str]:
    host = socket.gethostname()
    return [
        f"http://localhost:{PORT}/dicom-web",
        f"http://0.0.0.0:{PORT}/dicom-web",
        f"http://[::]:{PORT}/dicom-web",
        f"http://[::1]:{PORT}/dicom-web",
        f"http://[0:0:0:0:0:0:0:1]:{PORT}/dicom-web",
        f"http://[::ffff:127.0.0.1]:{PORT}/dicom-web",
        f"http://127.1:{PORT}/dicom-web",
        f"http://127.0.0.2:{PORT}/dicom-web",
        f"http://2130706433:{PORT}/dicom-web",
        f"http://0x7f000001:{PORT}/dicom-web",
        f"http://0177.0.0.1:{PORT}/dicom-web",
        f"HTTP://LOCALHOST.:{PORT}/DICOM-WEB",
        f"http://db.localhost:{PORT}/dicom-web",
        f"http://{host}:{PORT}/dicom-web",
        f"http://user:secret@127.0.0.1:{PORT}/dicom-web",
        f"http://127.0.0.1:{PORT}//dicom-web",
        f"http://127.0.0.1:{PORT}/%64icom-web",
        f"http://127.0.0.1:{PORT}/dicom%2Dweb",
        f"http://127.0.0.1:{PORT}/dicom-web%2Fstudies",
        f"http://127.0.0.1:{PORT}/x/../dicom-web",
        f"http://127.0.0.1:{PORT}/./dicom-web/./",
        f"http://127.0.0.1:{PORT}/dicom-web/studies?x=1#top",
        f"http://127.0.0.1:{PORT}\\dicom-web",
        f"http://127.0.0.1:{PORT}/",
    ]


def proxy(url: str) -> dict[str, Any]:
    return {"imaging": {"mode": "proxy", "upstreamUrl": url}}


@pytest.mark.parametrize("alias", aliases())
def test_every_alias_has_the_roots_key(alias: str) -> None:
    assert UpstreamKey.of(alias).clashes(UpstreamKey.of(ROOT)), alias


def test_other_servers_stay_apart() -> None:
    root = UpstreamKey.of(ROOT)
    for other in (
        f"http://127.0.0.1:{PORT + 1}/dicom-web",
        f"http://127.0.0.1:{PORT}/dicom-web2",
        f"http://127.0.0.1:{PORT}/other/dicom-web",
        f"http://192.0.2.7:{PORT}/dicom-web",  # TEST-NET-1: never this host
        f"http://pacs.invalid:{PORT}/dicom-web",
    ):
        assert not UpstreamKey.of(other).clashes(root), other


async def test_no_alias_is_accepted_for_a_second_tenant(gateway: Gateway) -> None:
    await imaging_tenant(gateway, "first", settings=proxy(ROOT))
    base = {"name": "Second", "status": "active", "addons": ["medical_imaging"]}
    accepted = []
    for number, alias in enumerate(aliases()):
        answer = await gateway.client.post(
            "/admin/tenants/",
            json={**base, "slug": f"second-{number}", "settings": proxy(alias)},
            headers=gateway.admin(),
        )
        if answer.status_code < 400:
            accepted.append(alias)
        elif answer.status_code == 409:
            assert answer.json()["details"]["tenant"] == "first"
        else:  # not a DICOMweb root at all (a query string): refused as invalid
            assert answer.status_code == 422, answer.text
    assert accepted == []
