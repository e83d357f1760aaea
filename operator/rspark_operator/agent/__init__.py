"""The snapshot agent (rspark-agent)."""
