"""The house rules that code review keeps forgetting, checked on every run.

Imports flow app -> areas -> clinical -> core -> config; areas never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "novaza_gateway"
WIRING = {"app", "cli", "asgi", "models", "migrate", "migrations", "__init__", "__main__"}
SHARED = {"core", "clinical", "config"}


def layer(module: Path) -> str:
    parts = module.relative_to(SRC).with_suffix("").parts
    return parts[0]


def imported_layers(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(), filename=str(module))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "novaza_gateway" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if "versions" not in p.parts)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_import_direction(module: Path) -> None:
    own = layer(module)
    if own in WIRING:
        return
    allowed = {own, "config"}
    if own == "clinical":
        allowed |= {"core"}
    elif own not in {"core", "config"}:
        allowed |= SHARED
    forbidden = imported_layers(module) - allowed
    assert not forbidden, f"{module.relative_to(SRC)} ({own}) imports {sorted(forbidden)}"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_base_http_middleware_or_stray_http_exceptions(module: Path) -> None:
    text = module.read_text()
    assert "BaseHTTPMiddleware" not in text, "middleware must be pure ASGI (ADR 0002)"
    if layer(module) != "core":
        assert "HTTPException" not in text, "areas raise ApiError subclasses (ADR 0001)"


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checker itself must be able to fail."""
    bad = tmp_path / "bad.py"
    bad.write_text("from novaza_gateway.billing import service\nimport novaza_gateway.hl7.parser\n")
    assert imported_layers(bad) == {"billing", "hl7"}
