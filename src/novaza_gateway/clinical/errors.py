"""Clinical errors. They carry a status and code like every ``ApiError``; the HL7 area turns
them into AE acknowledgements, an HTTP area renders them as they are."""

from __future__ import annotations

from novaza_gateway.core.errors import Conflict, NotFound


class PatientNotFound(NotFound):
    default_message = "No patient has this identifier."


class OrderNotFound(NotFound):
    default_message = "No order has this order number."


class InvalidTransition(Conflict):
    default_message = "The record's current state does not allow this change."
