"""Fixtures for the DKIM tests."""

from tests.fixtures.nsd import nsd_server  # noqa: F401 (pytest fixture)
