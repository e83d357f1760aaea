"""Fixtures for the snapshot agent tests (defined in helpers.py, shared with the tests)."""

from tests.integration.agent.helpers import agents, repo, s3

__all__ = ["agents", "repo", "s3"]
