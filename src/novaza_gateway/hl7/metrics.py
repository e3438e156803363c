"""HL7 metrics (Prometheus, the process registry core renders at /metrics). Labels stay
bounded: channel, message type (ADT, ORM, OMI or other), ACK code, delivery outcome."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Histogram

from novaza_gateway.core.metrics import TALLY
from novaza_gateway.hl7.intake import ANY
from novaza_gateway.hl7.outcome import Outcome

MESSAGES = Counter(
    "novaza_hl7_messages_total",
    "HL7 messages received, by channel, message type and ACK code (none: no ACK asked).",
    ["channel", "type", "ack"],
)
MLLP_ACK_SECONDS = Histogram(
    "novaza_hl7_mllp_ack_seconds",
    "MLLP: from a frame's arrival to its ACK being ready (stored and processed).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INTAKE_GROUP_MESSAGES = Histogram(
    "novaza_hl7_intake_group_messages",
    "MLLP intake: messages stored and processed per transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
INTAKE_REDO = Counter(
    "novaza_hl7_intake_redo_total",
    "MLLP intake groups run again with a SAVEPOINT per message.",
)
INTAKE_ALONE = Counter(
    "novaza_hl7_intake_alone_total",
    "Intake groups the store refused outside any message's SAVEPOINT: each message run again "
    "in a transaction of its own.",
)
DELIVERY_ATTEMPTS = Counter(
    "novaza_hl7_delivery_attempts_total",
    "ORU delivery attempts over MLLP, by outcome (AA, AE, AR, error, timeout, unroutable).",
    ["outcome"],
)


def count(channel: str, outcome: Outcome, acked: bool = True) -> None:
    kind = outcome.header.message_type.code if outcome.header else ""
    TALLY.inc(
        _messages(channel, kind if kind in ANY else "other", outcome.ack.code if acked else "none")
    )


def ack_latency(seconds: float) -> None:
    TALLY.observe(MLLP_ACK_SECONDS, seconds)


@functools.lru_cache(maxsize=64)  # bounded labels: 2 channels x 4 types x 4 codes
def _messages(channel: str, kind: str, code: str) -> Counter:
    return MESSAGES.labels(channel, kind, code)
