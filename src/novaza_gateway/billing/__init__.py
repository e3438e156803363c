"""Billing: catalogue, subscriptions, entitlements, metering, invoices, wallet, portal."""
