"""Fixtures of the gateway tests (helpers live in http_support, imported by name)."""

from http_support import client, server  # noqa: F401 - re-exported as fixtures
