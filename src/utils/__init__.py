"""Logging and config helpers."""
