"""Tenant settings: one validated section per product area, each area owning its schema.

Areas register their section model at wiring time (``app.py``). Fields typed ``SecretStr``
are write-only: stored sealed (``core.secretbox``, bound to tenant, section and field), never
returned, and kept when an update omits them. A section may
also name a ``Clash``: a rule over two tenants' sections that must not both hold (imaging:
two tenants proxying to one upstream archive); saving a clashing section is 409.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from novaza_gateway.core.errors import Conflict, ValidationFailed
from novaza_gateway.core.secretbox import SecretBox, is_sealed, place

Clash = Callable[[dict[str, Any], dict[str, Any]], str | None]
"""(this tenant's stored section, another tenant's) -> the field they collide on, or None."""


class SettingsSections:
    def __init__(self, box: SecretBox) -> None:
        self._box = box
        self._sections: dict[str, type[BaseModel]] = {}
        self._clashes: dict[str, Clash] = {}

    def register(self, name: str, model: type[BaseModel], clash: Clash | None = None) -> None:
        self._sections[name] = model
        if clash is not None:
            self._clashes[name] = clash

    @property
    def names(self) -> list[str]:
        return sorted(self._sections)

    def exclusive(self, update: dict[str, Any]) -> bool:
        """Whether saving ``update`` needs the other tenants' settings (``check_clashes``)."""
        return any(name in self._clashes and update[name] is not None for name in update)

    def check_clashes(
        self, stored: dict[str, Any], others: Iterable[tuple[str, dict[str, Any]]]
    ) -> None:
        """409 when a section of ``stored`` clashes with another tenant's (slug, settings)."""
        for slug, settings in others:
            for name, clash in self._clashes.items():
                mine, theirs = stored.get(name), (settings or {}).get(name)
                if not isinstance(mine, dict) or not isinstance(theirs, dict):
                    continue
                field = clash(mine, theirs)
                if field is not None:
                    path = f"settings.{name}.{field}"
                    raise Conflict(
                        f"{path}: already used by tenant '{slug}'; it cannot serve two tenants.",
                        details={"path": path, "tenant": slug},
                    )

    def merge(
        self, stored: dict[str, Any], update: dict[str, Any], tenant_id: str
    ) -> dict[str, Any]:
        """Validate ``update`` section by section over ``stored``; answer the document to store."""
        merged = dict(stored)
        for name, section in update.items():
            model = self._sections.get(name)
            if model is None:
                raise ValidationFailed.field(f"settings.{name}", "unknown settings section")
            if section is None:
                merged.pop(name, None)
                continue
            if not isinstance(section, dict):
                raise ValidationFailed.field(f"settings.{name}", "must be an object")
            old = stored.get(name) or {}
            merged[name] = self._seal(
                tenant_id, name, model, old, self._validate(name, model, old, section)
            )
        return merged

    def reseal(self, stored: dict[str, Any], tenant_id: str) -> tuple[dict[str, Any], int]:
        """Every secret sealed under the sealing key (plaintext ones too); how many changed."""
        resealed, changed = dict(stored), 0
        for name, section in stored.items():
            model = self._sections.get(name)
            if model is None or not isinstance(section, dict):
                continue
            section = dict(section)
            for field in _secret_fields(model):
                value = section.get(field)
                if isinstance(value, str) and self._box.needs_reseal(value):
                    where = place(tenant_id, name, field)
                    section[field] = self._box.seal(self._box.open(value, where), where)
                    changed += 1
            resealed[name] = section
        return resealed, changed

    def public_view(self, stored: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {}
        for name, section in stored.items():
            model = self._sections.get(name)
            if model is None or not isinstance(section, dict):
                continue
            secrets = _secret_fields(model)
            view[name] = {k: v for k, v in section.items() if k not in secrets}
            present = sorted(k for k in secrets if section.get(k))
            if present:
                view[name]["secretsSet"] = present
        return view

    @staticmethod
    def _validate(
        name: str, model: type[BaseModel], old: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        candidate = dict(new)
        for field_name in _secret_fields(model):
            if field_name not in candidate and field_name in old:
                candidate[field_name] = old[field_name]
        try:
            parsed = model.model_validate(candidate)
        except ValidationError as exc:
            errors = [
                {"path": ".".join(["settings", name, *map(str, e["loc"])]), "reason": e["msg"]}
                for e in exc.errors()
            ]
            raise ValidationFailed(
                f"{errors[0]['path']}: {errors[0]['reason']}", details={"errors": errors}
            ) from None
        dumped = parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
        for field_name in _secret_fields(model):
            value = getattr(parsed, _attr(model, field_name))
            if isinstance(value, SecretStr):
                dumped[field_name] = value.get_secret_value()
        return dumped

    def _seal(
        self,
        tenant_id: str,
        name: str,
        model: type[BaseModel],
        old: dict[str, Any],
        section: dict[str, Any],
    ) -> dict[str, Any]:
        """Secrets sealed for storage; one kept from ``old`` stays as it was sealed."""
        for field in _secret_fields(model):
            value = section.get(field)
            if not isinstance(value, str) or (is_sealed(value) and value == old.get(field)):
                continue
            section[field] = self._box.seal(value, place(tenant_id, name, field))
        return section


def _attr(model: type[BaseModel], alias: str) -> str:
    for attr, info in model.model_fields.items():
        if (info.alias or attr) == alias:
            return attr
    return alias


def _secret_fields(model: type[BaseModel]) -> set[str]:
    return {
        (info.alias or attr)
        for attr, info in model.model_fields.items()
        if info.annotation is SecretStr or info.annotation == SecretStr | None
    }
