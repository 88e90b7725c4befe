"""Vigil's parent side: supervisor, session coordinator, latency tracking, config and the CLI."""
