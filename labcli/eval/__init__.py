"""Metrics, error analysis and plots."""
