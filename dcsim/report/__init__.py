"""Capacity-planning reports: one self-contained HTML page per results folder."""
