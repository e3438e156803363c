"""The tenant's Personeo API (upstream mode), through the app's shared ``httpx.AsyncClient``.

``POST {base}/rooms`` with a JSON room answers ``{"id": ...}``; ``DELETE {base}/rooms/{id}``
archives it (a 404 there counts as archived). Any other answer, a refused connection or a
timeout is ``PersoneoUnavailable`` (502), which says whether the call may have taken effect
there anyway. Bodies and keys are never logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from novaza_gateway.rooms.errors import PersoneoUnavailable

log = logging.getLogger("novaza.rooms.personeo")


@dataclass(frozen=True, slots=True)
class Upstream:
    """A tenant's Personeo: its API root and bearer key (from the ``rooms`` settings)."""

    base_url: str
    api_key: str | None

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> Upstream | None:
        if not section or not section.get("baseUrl"):
            return None
        return cls(str(section["baseUrl"]).rstrip("/"), section.get("apiKey") or None)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class PersoneoClient:
    def __init__(self, http: httpx.AsyncClient, timeout_seconds: float) -> None:
        self._http = http
        self._timeout = timeout_seconds

    async def create_room(self, upstream: Upstream, room: dict[str, Any]) -> str:
        response = await self._call("POST", upstream, f"{upstream.base_url}/rooms", room)
        if response.status_code not in (200, 201):
            raise _failed("create", response.status_code)
        try:
            remote_id = response.json().get("id")
        except ValueError:
            remote_id = None
        if not isinstance(remote_id, str) or not remote_id or len(remote_id) > 128:
            log.warning("personeo create answered without a usable room id")
            raise PersoneoUnavailable("no room id in the answer", maybe_applied=True)
        return remote_id

    async def archive_room(self, upstream: Upstream, remote_id: str) -> None:
        url = f"{upstream.base_url}/rooms/{quote(remote_id, safe='')}"
        response = await self._call("DELETE", upstream, url, None)
        if response.status_code not in (200, 202, 204, 404):
            raise _failed("archive", response.status_code)

    async def _call(
        self, method: str, upstream: Upstream, url: str, body: dict[str, Any] | None
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, url, json=body, headers=upstream.headers(), timeout=self._timeout
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            log.warning("personeo %s failed: %s", method, type(exc).__name__)  # never sent
            reason = "unreachable" if isinstance(exc, httpx.ConnectError) else "timeout"
            raise PersoneoUnavailable(reason) from None
        except httpx.TimeoutException:
            log.warning("personeo %s timed out", method)
            raise PersoneoUnavailable("timeout", maybe_applied=True) from None
        except httpx.HTTPError as exc:
            log.warning("personeo %s failed: %s", method, type(exc).__name__)
            raise PersoneoUnavailable("unreachable", maybe_applied=True) from None


def _failed(operation: str, status: int) -> PersoneoUnavailable:
    log.warning("personeo %s answered %d", operation, status)
    return PersoneoUnavailable(f"Personeo answered {status}")
