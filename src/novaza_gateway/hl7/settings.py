"""The ``hl7`` section of tenant settings: MLLP routing, order defaults, ORU destinations."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

AE_TITLE = r"^[ -~]{1,16}$"
DICOM_MODALITIES = frozenset(
    [
        "CR",
        "CT",
        "DX",
        "ES",
        "IO",
        "MG",
        "MR",
        "NM",
        "OT",
        "PT",
        "RF",
        "RG",
        "SC",
        "US",
        "XA",
        "XC",
        "IVUS",
        "OCT",
        "ECG",
        "EPS",
        "HD",
        "SM",
        "BI",
        "DG",
    ]
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MllpRoute(_Section):
    """Messages whose MSH matches every field given here belong to this tenant."""

    receiving_application: str | None = Field(default=None, alias="receivingApplication")
    receiving_facility: str | None = Field(default=None, alias="receivingFacility")
    sending_facility: str | None = Field(default=None, alias="sendingFacility")

    @model_validator(mode="after")
    def _not_empty(self) -> MllpRoute:
        if not (self.receiving_application or self.receiving_facility or self.sending_facility):
            raise ValueError("a route names a receiving application/facility or sending facility")
        return self

    def matches(self, receiving_app: str, receiving_fac: str, sending_fac: str) -> bool:
        pairs = (
            (self.receiving_application, receiving_app),
            (self.receiving_facility, receiving_fac),
            (self.sending_facility, sending_fac),
        )
        return all(want is None or want.upper() == got.upper() for want, got in pairs)


class Destination(_Section):
    """Where ORUs go: an MLLP receiver."""

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    receiving_application: str = Field(default="", alias="receivingApplication", max_length=180)
    receiving_facility: str = Field(default="", alias="receivingFacility", max_length=180)


class Hl7Settings(_Section):
    mllp_routes: list[MllpRoute] = Field(default_factory=list, alias="mllpRoutes")
    register_unknown_patients: bool = Field(default=True, alias="registerUnknownPatients")
    station_ae_title: str | None = Field(default=None, alias="stationAeTitle", pattern=AE_TITLE)
    modality_stations: dict[str, str] = Field(default_factory=dict, alias="modalityStations")
    procedure_modalities: dict[str, str] = Field(default_factory=dict, alias="procedureModalities")
    sending_application: str = Field(default="NOVAZA", alias="sendingApplication", max_length=180)
    sending_facility: str = Field(default="NOVAZA", alias="sendingFacility", max_length=180)
    destinations: dict[str, Destination] = Field(default_factory=dict)
    default_destination: str | None = Field(default=None, alias="defaultDestination")

    @model_validator(mode="after")
    def _known_default(self) -> Hl7Settings:
        if self.default_destination and self.default_destination not in self.destinations:
            raise ValueError("defaultDestination names no destination")
        for modality in [*self.modality_stations, *self.procedure_modalities.values()]:
            if modality not in DICOM_MODALITIES:
                raise ValueError(f"'{modality}' is not a DICOM modality")
        for station in self.modality_stations.values():
            if not re.match(AE_TITLE, station):
                raise ValueError(f"'{station[:20]}' is not an AE title (1-16 printable characters)")
        return self

    def station_for(self, modality: str) -> str:
        return self.modality_stations.get(modality) or self.station_ae_title or ""

    def modality_for(self, code: str, declared: str) -> str:
        if declared.upper() in DICOM_MODALITIES:
            return declared.upper()
        return self.procedure_modalities.get(code, "")
