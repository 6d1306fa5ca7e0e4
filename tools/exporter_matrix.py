"""Placeholder, replaced by the exporter matrix."""
