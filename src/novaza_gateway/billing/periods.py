"""Billing periods: monthly, anchored on the day the subscription started."""

from __future__ import annotations

import calendar
from datetime import datetime


def add_months(at: datetime, months: int = 1, anchor_day: int | None = None) -> datetime:
    """``at`` moved by whole months, on ``anchor_day`` (clamped to the month's length)."""
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    day = min(anchor_day or at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)
