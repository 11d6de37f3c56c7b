"""`prepwatch report`: one self-contained HTML file for a run (findings, alerts, panels)."""
