"""``novaza billing close-period`` as an operator runs it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests import procs


def test_close_period_issues_due_invoices_once(tmp_path: Path) -> None:
    env = procs.novaza_env(tmp_path / "data")
    procs.run_cli(env, "migrate")
    procs.run_cli(env, "tenants", "create", "cli-site", "--name", "CLI", "--activate")
    procs.run_cli(env, "tenants", "create", "not-due", "--name", "Later", "--activate")
    nothing = procs.run_cli(env, "billing", "close-period")
    assert nothing.stdout == "" and "0 invoice(s)" in nothing.stderr
    db = tmp_path / "data" / "novaza.db"
    conn = sqlite3.connect(db)
    try:
        # the subscription's period ended an hour ago (as if the month had passed)
        conn.execute(
            "UPDATE billing_subscriptions SET current_period_start = datetime('now', '-1 month'),"
            " current_period_end = datetime('now', '-1 hour') WHERE tenant_id ="
            " (SELECT id FROM tenants WHERE slug = 'cli-site')"
        )
        conn.commit()
    finally:
        conn.close()
    closed = procs.run_cli(env, "billing", "close-period")
    [line] = closed.stdout.splitlines()
    invoice = json.loads(line)
    assert (invoice["number"], invoice["status"], invoice["total"]) == (1, "open", 9900)
    again = procs.run_cli(env, "billing", "close-period")
    assert again.stdout == ""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT number, total FROM billing_invoices").fetchall()
        status = conn.execute(
            "SELECT s.status FROM billing_subscriptions s JOIN tenants t ON t.id = s.tenant_id"
            " WHERE t.slug = 'cli-site'"
        ).fetchone()
    finally:
        conn.close()
    assert rows == [(1, 9900)]
    assert status == ("past_due",)
