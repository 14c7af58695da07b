"""SimPy engine: serving replicas, routing, metrics."""
