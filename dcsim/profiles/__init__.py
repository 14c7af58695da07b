"""Measured-profile store."""
