"""PostgreSQL plans follow the tables: no generic plan kept from when a table was young."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from novaza_gateway.config import Settings
from novaza_gateway.core.db import create_engine
from tests.conftest import need


async def test_lookups_are_planned_per_run_not_once_for_good(pg_database: str | None) -> None:
    """A statement prepared on a young table must not keep the seq-scan plan it got then
    (seen: 45 ms per HL7 order lookup at 30,000 orders, intake down to 200 messages/s)."""
    need(pg_database is not None, "PostgreSQL not reachable")
    assert pg_database is not None
    engine = create_engine(Settings(database_url=pg_database, data_dir=Path("/tmp")).sqlalchemy_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CREATE TEMP TABLE plan_probe (id text PRIMARY KEY, k text)"))
            await conn.execute(text("CREATE INDEX ON plan_probe (k)"))
            await conn.execute(
                text(
                    "INSERT INTO plan_probe SELECT g::text, 'k' || g FROM generate_series(1, 50) g"
                )
            )
            await conn.execute(text("ANALYZE plan_probe"))
            lookup = text("SELECT id FROM plan_probe WHERE k = ANY(:keys)")
            for n in range(12):  # past the five runs after which a generic plan may stick
                rows = (await conn.execute(lookup, {"keys": [f"k{n}", "k40"]})).all()
                assert len(rows) == (2 if n else 1)
            counts = (
                await conn.execute(
                    text(
                        "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                        "WHERE statement LIKE 'SELECT id FROM plan_probe%'"
                    )
                )
            ).one()
            assert counts.generic_plans == 0 and counts.custom_plans >= 12
            mode = (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()
            assert mode == "force_custom_plan"
    finally:
        await engine.dispose()
