"""Exposition: the HTTP endpoint, and the snapshot link from ranks to a node agent."""
