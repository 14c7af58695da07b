"""Hardware models: collectives, power, network, storage, facility."""
