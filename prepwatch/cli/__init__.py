"""Command line: `prepwatch run|agent|demo|probe-io|check-transform|dashboards`."""
