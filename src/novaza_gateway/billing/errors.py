"""Billing's error codes (listed in docs/errors.md)."""

from __future__ import annotations

from novaza_gateway.core.errors import ApiError, NotFound


class SubscriptionNotFound(NotFound):
    code = "SUBSCRIPTION_NOT_FOUND"
    default_message = "The tenant has no subscription yet."


class InvoiceNotFound(NotFound):
    code = "INVOICE_NOT_FOUND"
    default_message = "The tenant has no invoice with this id."


class CurrencyMismatch(ApiError):
    status = 422
    code = "CURRENCY_MISMATCH"
    default_message = "The amount's currency is not the wallet's currency."


class IdempotencyKeyReused(ApiError):
    status = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "This Idempotency-Key was used with a different request body."


class InsufficientFunds(ApiError):
    status = 409
    code = "INSUFFICIENT_FUNDS"
    default_message = "The wallet's balance would fall below its floor."


class ReturnUrlNotAllowed(ApiError):
    status = 422
    code = "RETURN_URL_NOT_ALLOWED"
    default_message = "returnUrl is not one of the tenant's allowed origins."


class InvoiceNotFinalized(ApiError):
    status = 409
    code = "INVOICE_NOT_FINALIZED"
    default_message = "The upcoming invoice is a draft; only an issued invoice changes status."


class InvoiceAlreadyPaid(ApiError):
    status = 409
    code = "INVOICE_ALREADY_PAID"
    default_message = "A paid invoice can be neither voided nor marked uncollectible."


class InvoiceAlreadyVoid(ApiError):
    status = 409
    code = "INVOICE_ALREADY_VOID"
    default_message = "A void invoice is final; it cannot be marked uncollectible."
