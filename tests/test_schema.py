"""The migrations build exactly the schema the models declare, on both stores: a table,
column, type or index added on one side only fails here, not in production."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from novaza_gateway import models
from novaza_gateway.config import Settings


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, models.metadata))


async def test_migrated_schema_matches_the_models(db_url: str, tmp_path: Any) -> None:
    url = Settings(database_url=db_url, data_dir=tmp_path).sqlalchemy_url
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []
