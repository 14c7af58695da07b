"""Sweeps: a base scenario run over a grid or sample of field values, in parallel."""
