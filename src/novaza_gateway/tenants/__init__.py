"""Tenant administration: onboarding, plans and add-ons, suspension, settings."""
