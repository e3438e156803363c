"""A stored contact as the API shows it (and as it is pushed to an upstream Desk)."""

from __future__ import annotations

from typing import Any

from novaza_gateway.desk.models import DeskContact
from novaza_gateway.desk.schemas import ContactOut, NameOut


def _out(row: Any) -> ContactOut:
    return ContactOut(
        id=row.id,
        external_id=row.external_id,
        name=NameOut(given=row.given_name, family=row.family_name, display=row.display_name),
        emails=row.emails,
        phones=row.phones,
        organization=row.organization,
        title=row.title,
        tags=row.tags,
        attributes=row.attributes,
        patient_id=row.patient_id,
        version=row.version,
        deleted=row.deleted_at is not None,
        deleted_at=row.deleted_at,
        sync_status=row.sync_status,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class _Row:
    """Attribute access over a row dict, for ``_out``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def contact_out(contact: DeskContact) -> ContactOut:
    return _out(contact)


def payload(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON pushed upstream for a contact row about to be written."""
    out = _out(_Row({**row, "sync_status": None}))
    document = out.model_dump(mode="json", by_alias=True, exclude={"sync_status"})
    return document
