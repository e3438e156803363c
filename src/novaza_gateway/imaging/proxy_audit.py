"""What proxy mode's audit records name: the patient and studies a proxied read touched.

The gateway holds no index of an upstream's studies, so the patient of a study comes from
what the proxy saw (QIDO study answers carry PatientID) or, when it saw nothing yet, from
one small QIDO lookup to the upstream, remembered per tenant for a while.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from novaza_gateway.imaging.dicomweb.attributes import JsonDataset

STUDY_UID, PATIENT_ID, RETRIEVE_URL = "0020000D", "00100020", "00081190"
REFERENCED_SOPS, FAILED_SOPS = "00081199", "00081198"
MAX_AUDITED_STUDIES = 100

Lookup = Callable[[str], Awaitable[str | None]]


def first_string(item: JsonDataset, tag: str) -> str | None:
    element = item.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if isinstance(values, list) and values and isinstance(values[0], str | int | float):
        return str(values[0])
    return None


def search_summary(results: Iterable[JsonDataset]) -> tuple[dict[str, str | None], int]:
    """(study UID -> patient ID when the answer says, result count) of a QIDO answer."""
    studies: dict[str, str | None] = {}
    count = 0
    for item in results:
        count += 1
        if not isinstance(item, dict):
            continue
        study = first_string(item, STUDY_UID)
        if study is not None:
            studies[study] = first_string(item, PATIENT_ID) or studies.get(study)
    return studies, count


def stored_studies(response: Any) -> tuple[list[str], int, int]:
    """(study UIDs, stored count, failed count) of a STOW-RS store response."""
    if not isinstance(response, dict):
        return [], 0, 0
    studies: list[str] = []
    referenced = (response.get(REFERENCED_SOPS) or {}).get("Value") or []
    failed = (response.get(FAILED_SOPS) or {}).get("Value") or []
    for item in referenced:
        url = first_string(item, RETRIEVE_URL) if isinstance(item, dict) else None
        study = _study_of_url(url) if url else None
        if study is not None and study not in studies:
            studies.append(study)
    if not studies:
        url = first_string(response, RETRIEVE_URL)
        study = _study_of_url(url) if url else None
        if study is not None:
            studies.append(study)
    return studies, len(referenced), len(failed)


def _study_of_url(url: str) -> str | None:
    _, found, rest = url.partition("/studies/")
    return rest.split("/", 1)[0] or None if found else None


class StudyPatients:
    """Per-tenant memory of which patient a study belongs to (LRU, with a lifetime)."""

    def __init__(self, size: int = 20_000, ttl_seconds: float = 600.0) -> None:
        self._size = size
        self._ttl = ttl_seconds
        self._entries: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def remember(self, tenant_id: str, studies: dict[str, str | None]) -> None:
        expires = time.monotonic() + self._ttl
        for study, patient in studies.items():
            if patient:
                self._entries[(tenant_id, study)] = (patient, expires)
                self._entries.move_to_end((tenant_id, study))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def known(self, tenant_id: str, study: str) -> str | None:
        entry = self._entries.get((tenant_id, study))
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    async def of_study(self, tenant_id: str, study: str, lookup: Lookup) -> str | None:
        patient = self.known(tenant_id, study)
        if patient is None:
            patient = await lookup(study)
            if patient is not None:
                self.remember(tenant_id, {study: patient})
        return patient

    def patients_of(self, tenant_id: str, studies: dict[str, str | None]) -> set[str | None]:
        """The patients the studies named belong to, as known (None: not known)."""
        return {patient or self.known(tenant_id, study) for study, patient in studies.items()}
