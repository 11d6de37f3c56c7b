"""One-shot tools run from the CLI (probe-io, dashboards push), apart from the 1 Hz sources."""
