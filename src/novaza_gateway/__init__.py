"""Novaza Gateway: the one front door of the Novaza clinical platform."""

__version__ = "0.1.0"
API_VERSION = "1.0"
