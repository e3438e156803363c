"""Pure contact normalization: emails, phones, tags, and the content hash. No I/O.

Emails are trimmed and lowercased (the whole address: Desk and every CRM we sync with
compare them case-insensitively). Phones are E.164-ish: formatting (spaces, dots, dashes,
parentheses) dropped, a leading ``00`` read as ``+``, then 7-15 digits, ``+`` kept when given.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
PHONE_FORMATTING = re.compile(r"[\s().\-/]")
PHONE = re.compile(r"^\+?[0-9]{7,15}$")


def email(value: str) -> str:
    normalized = value.strip().lower()
    if len(normalized) > 254 or not EMAIL.match(normalized):
        raise ValueError(f"'{value[:64]}' is not an email address")
    return normalized


def phone(value: str) -> str:
    normalized = PHONE_FORMATTING.sub("", value.strip())
    if normalized.startswith("00"):
        normalized = "+" + normalized[2:]
    if not PHONE.match(normalized):
        raise ValueError(f"'{value[:32]}' is not a phone number (7-15 digits, optional +)")
    return normalized


def unique(values: list[str]) -> list[str]:
    """In the order given, each once."""
    return list(dict.fromkeys(values))


def content_hash(content: dict[str, Any]) -> str:
    """SHA-256 of the contact's normalized content as canonical JSON (sorted keys)."""
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
