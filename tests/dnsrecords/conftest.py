"""Fixtures for the DNS-records tests."""

from tests.fixtures.nsd import nsd_server  # noqa: F401 (pytest fixture)
