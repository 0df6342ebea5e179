"""Fixtures the integration tests share: moto's server for the dlcloud tests."""

from tests.harness.dlcloud import moto_env

__all__ = ["moto_env"]
