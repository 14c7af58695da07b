"""Energy-, cost- or carbon-minimal deployments under latency SLOs (Pyomo + HiGHS)."""
