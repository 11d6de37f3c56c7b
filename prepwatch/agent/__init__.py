"""The node agent: serves every rank of the jobs on this node under one scrape target."""
