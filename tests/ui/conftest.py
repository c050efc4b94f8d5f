"""Fixtures for the UI tests (helpers live in ui_helpers.py: a module named `conftest` is
ambiguous once several test folders have one)."""

from ui_helpers import restaurant_run  # noqa: F401 - re-exported as a fixture
