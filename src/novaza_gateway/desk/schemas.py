"""Desk wire shapes: the sync request and answer, a contact as returned."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from novaza_gateway.core.schemas import ApiModel, ApiResponse
from novaza_gateway.desk import normalize

MAX_CONTACTS = 1000
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)]
ExternalId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255, pattern=r"^\S+$")
]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
AttributeValue = str | int | float | bool | None


class ContactName(ApiModel):
    given: Text = ""
    family: Text = ""
    display: Text = ""

    @model_validator(mode="after")
    def _some_name(self) -> ContactName:
        if not (self.given or self.family or self.display):
            raise ValueError("give given, family or display")
        if not self.display:
            self.display = " ".join(part for part in (self.given, self.family) if part)
        return self


class ContactIn(ApiModel):
    """One contact of a sync. Validated item by item: a bad one fails alone."""

    external_id: ExternalId
    name: ContactName | None = None
    emails: Annotated[list[str], Field(max_length=20)] = Field(default_factory=list)
    phones: Annotated[list[str], Field(max_length=20)] = Field(default_factory=list)
    organization: Text | None = None
    title: Text | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] = Field(default_factory=list)
    attributes: Annotated[dict[str, AttributeValue], Field(max_length=100)] = Field(
        default_factory=dict
    )
    patient_id: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    deleted: bool = False

    @field_validator("emails")
    @classmethod
    def _emails(cls, values: list[str]) -> list[str]:
        return normalize.unique([normalize.email(value) for value in values])

    @field_validator("phones")
    @classmethod
    def _phones(cls, values: list[str]) -> list[str]:
        return normalize.unique([normalize.phone(value) for value in values])

    @field_validator("tags")
    @classmethod
    def _tags(cls, values: list[str]) -> list[str]:
        return sorted(set(values))

    @field_validator("attributes")
    @classmethod
    def _attribute_keys(cls, values: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        for key in values:
            if not 1 <= len(key) <= 64:
                raise ValueError("attribute names are 1-64 characters")
        return values

    @model_validator(mode="after")
    def _named_unless_deleted(self) -> ContactIn:
        if self.name is None and not self.deleted:
            raise ValueError("name is required (given/family or display)")
        return self

    def content(self) -> dict[str, Any]:
        """What the content hash covers: everything but the external id and ``deleted``."""
        name = self.name
        assert name is not None  # a contact is named unless deleted
        return {
            "given": name.given,
            "family": name.family,
            "display": name.display,
            "emails": self.emails,
            "phones": self.phones,
            "organization": self.organization,
            "title": self.title,
            "tags": self.tags,
            "attributes": self.attributes,
            "patientId": self.patient_id,
        }


class SyncIn(ApiModel):
    """Items stay raw here: each is validated on its own (``ContactIn``)."""

    contacts: list[Any]
    mode: Literal["upsert"] = "upsert"


ContactRef = Annotated[str, StringConstraints(min_length=1, max_length=300)]


class RequeueIn(ApiModel):
    """Which failed contacts to push again: gateway ids or ``ext:{externalId}``; none named
    (or no body) means every failed contact of the tenant."""

    contact_ids: Annotated[list[ContactRef], Field(max_length=MAX_CONTACTS)] = Field(
        default_factory=list
    )


class RequeueOut(ApiResponse):
    requeued: int
    skipped: int


class FieldError(ApiResponse):
    path: str
    reason: str


Status = Literal["created", "updated", "unchanged", "deleted", "failed"]


class SyncResult(ApiResponse):
    external_id: str | None
    contact_id: str | None
    status: Status
    version: int | None
    errors: list[FieldError] | None = None


class SyncOut(ApiResponse):
    created: int
    updated: int
    unchanged: int
    deleted: int
    failed: int
    results: list[SyncResult]


class NameOut(ApiResponse):
    given: str
    family: str
    display: str


class ContactOut(ApiResponse):
    id: str
    external_id: str
    name: NameOut
    emails: list[str]
    phones: list[str]
    organization: str | None
    title: str | None
    tags: list[str]
    attributes: dict[str, Any]
    patient_id: str | None
    version: int
    deleted: bool
    deleted_at: datetime | None
    sync_status: Literal["pending", "synced", "failed"] | None
    created_at: datetime
    updated_at: datetime
