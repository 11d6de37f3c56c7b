"""Data-integrity and class-health checks: computed off the hot path, exported as metrics."""
