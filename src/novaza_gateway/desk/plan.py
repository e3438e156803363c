"""What a sync does to each contact, decided before anything is written. No I/O.

Each item of the request becomes one result, in order: ``failed`` (with field errors),
``created``, ``updated`` (a version more), ``unchanged`` (same content hash: not rewritten)
or ``deleted`` (soft: ``deleted_at`` set, a version more). The plan gathers the rows to
insert and update, the outbox rows (upstream mode), and the patient-linked contacts touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from novaza_gateway.core.ids import new_id
from novaza_gateway.desk import normalize
from novaza_gateway.desk.schemas import ContactIn, FieldError, SyncOut, SyncResult
from novaza_gateway.desk.views import payload

_ADAPTER = TypeAdapter(ContactIn)
PENDING = "pending"


@dataclass(slots=True)
class Item:
    external_id: str | None
    contact: ContactIn | None = None
    errors: list[FieldError] = field(default_factory=list)


def _raw_external_id(raw: Any) -> str | None:
    value = raw.get("externalId") if isinstance(raw, dict) else None
    return value.strip()[:255] if isinstance(value, str) else None


def parse_items(raw_items: list[Any]) -> list[Item]:
    """Validate each item alone; the second item naming an external id fails."""
    items: list[Item] = []
    seen: set[str] = set()
    for raw in raw_items:
        if not isinstance(raw, dict):
            items.append(Item(None, errors=[FieldError(path="", reason="must be an object")]))
            continue
        try:
            contact = _ADAPTER.validate_python(raw)
        except ValidationError as exc:
            errors = [
                FieldError(path=".".join(map(str, e["loc"])) or "", reason=e["msg"])
                for e in exc.errors()
            ]
            items.append(Item(_raw_external_id(raw), errors=errors))
            continue
        if contact.external_id in seen:
            duplicate = FieldError(path="externalId", reason="appears more than once in the batch")
            items.append(Item(contact.external_id, errors=[duplicate]))
            continue
        seen.add(contact.external_id)
        items.append(Item(contact.external_id, contact))
    return items


def outbox_row(tenant_id: str, row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The outbox entry pushing this version of a contact row, due now, never attempted."""
    return {
        "id": new_id(),
        "tenant_id": tenant_id,
        "contact_id": row["id"],
        "version": row["version"],
        "payload": payload(row),
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": now,
        "claim": None,
        "lease_until": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
        "delivered_at": None,
    }


@dataclass(slots=True)
class Plan:
    tenant_id: str
    now: datetime
    upstream: bool
    results: list[SyncResult] = field(default_factory=list)
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    # (action, contact id, patient id, version) of each written patient-linked contact
    patient_touches: list[tuple[str, str, str, int]] = field(default_factory=list)

    def decide(self, item: Item, stored: dict[str, Any], links: dict[str, str]) -> None:
        contact = item.contact
        if contact is None:
            self._fail(item.external_id, item.errors)
            return
        old = stored.get(contact.external_id)
        if contact.deleted:
            self._delete(contact.external_id, old)
            return
        link = None
        if contact.patient_id is not None:
            link = links.get(contact.patient_id)
            if link is None:
                reason = "no patient of this tenant has this id"
                self._fail(contact.external_id, [FieldError(path="patientId", reason=reason)])
                return
        content = {**contact.content(), "patientId": link}
        digest = normalize.content_hash(content)
        if old is not None and old.deleted_at is None and old.content_hash == digest:
            self._result(contact.external_id, old.id, "unchanged", old.version)
            return
        row = self._row(contact.external_id, content, digest, old)
        (self.updates if old is not None else self.inserts).append(row)
        status = "updated" if old is not None else "created"
        self._written(status, row, old)

    def _delete(self, external_id: str, old: Any) -> None:
        if old is None:
            reason = "no contact has this externalId"
            self._fail(external_id, [FieldError(path="deleted", reason=reason)])
            return
        if old.deleted_at is not None:
            self._result(external_id, old.id, "unchanged", old.version)
            return
        row = {**old._asdict(), "version": old.version + 1, "deleted_at": self.now}
        row["updated_at"] = max(self.now, old.updated_at + timedelta(microseconds=1))
        self.updates.append(row)
        self._written("deleted", row, old)

    def _row(
        self, external_id: str, content: dict[str, Any], digest: str, old: Any
    ) -> dict[str, Any]:
        return {
            "id": old.id if old is not None else new_id(),
            "tenant_id": self.tenant_id,
            "external_id": external_id,
            "given_name": content["given"],
            "family_name": content["family"],
            "display_name": content["display"],
            "emails": content["emails"],
            "phones": content["phones"],
            "organization": content["organization"],
            "title": content["title"],
            "tags": content["tags"],
            "attributes": content["attributes"],
            "patient_id": content["patientId"],
            "content_hash": digest,
            "version": old.version + 1 if old is not None else 1,
            "sync_status": old.sync_status if old is not None else None,
            "deleted_at": None,
            "created_at": old.created_at if old is not None else self.now,
            "updated_at": self.now,
        }

    def _written(self, status: str, row: dict[str, Any], old: Any) -> None:
        self._result(row["external_id"], row["id"], status, row["version"])
        if self.upstream:
            row["sync_status"] = PENDING
            self.outbox.append(self._outbox_row(row))
        patient = row["patient_id"] or (old.patient_id if old is not None else None)
        if patient is not None:
            action = {"created": "create", "updated": "update", "deleted": "delete"}[status]
            self.patient_touches.append((action, row["id"], patient, row["version"]))

    def _outbox_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return outbox_row(self.tenant_id, row, self.now)

    def _fail(self, external_id: str | None, errors: list[FieldError]) -> None:
        self.results.append(
            SyncResult(
                external_id=external_id, contact_id=None, status="failed", version=None,
                errors=errors,
            )
        )  # fmt: skip

    def _result(self, external_id: str, contact_id: str, status: Any, version: int) -> None:
        self.results.append(
            SyncResult(
                external_id=external_id, contact_id=contact_id, status=status, version=version
            )
        )

    def answer(self) -> SyncOut:
        counts = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0, "failed": 0}
        for result in self.results:
            counts[result.status] += 1
        return SyncOut(**counts, results=self.results)
