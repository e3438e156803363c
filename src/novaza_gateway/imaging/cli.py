"""``novaza dicom import --tenant SLUG PATH...``: files and folders into the embedded archive.

The same ingest path as STOW-RS (staged, inspected, fsynced, indexed per file, one
transaction), audited as the shell user. ``cli.py`` supplies how a slug becomes a tenant id.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.config import load_settings
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.db import Database, create_engine
from novaza_gateway.imaging import ingest
from novaza_gateway.imaging.area import ImagingArea

TenantLookup = Callable[[AsyncSession, str], Awaitable[str | None]]


def build_dicom_cli(lookup: TenantLookup) -> typer.Typer:
    dicom_cli = typer.Typer(help="DICOM archive: import files.", no_args_is_help=True)

    @dicom_cli.command("import")
    def import_files(
        paths: Annotated[list[Path], typer.Argument(exists=True, help="Files or folders")],
        tenant: Annotated[str, typer.Option(help="Tenant slug")],
    ) -> None:
        """Import DICOM files (folders recursively); idempotent per SOP Instance UID."""
        settings = load_settings()
        area = ImagingArea(settings.imaging, settings.data_dir)

        async def main() -> ingest.IngestReport | None:
            db = Database(create_engine(settings.sqlalchemy_url))
            try:
                async with db.session_scope() as session:
                    tenant_id = await lookup(session, tenant)
                    if tenant_id is None:
                        return None
                    actor = Actor(f"cli:{getpass.getuser()}", tenant_id)
                    return await ingest.import_paths(
                        session, area.storage, actor, tenant_id, paths, base_url=settings.base_url
                    )
            finally:
                await db.dispose()
                await area.aclose()  # the store's pool; this process's staging directory

        report = asyncio.run(main())
        if report is None:
            typer.echo(f"TENANT_UNKNOWN: no tenant '{tenant}'", err=True)
            raise typer.Exit(1)
        typer.echo(
            f"stored {len(report.stored)} instance(s) ({report.written} new), "
            f"{len(report.studies)} stud(ies); failed {len(report.failed)}"
        )
        for failed in report.failed:
            typer.echo(f"failed: {failed.sop_instance_uid or '-'} reason 0x{failed.reason:04X}")
        if report.failed:
            raise typer.Exit(3 if report.stored else 1)

    return dicom_cli
