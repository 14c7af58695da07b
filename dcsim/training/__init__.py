"""Training jobs: step time, checkpoints, failures."""
