"""Framework integrations: one line in a Trainer that owns the training loop.

Each submodule imports its framework only when imported itself, so none of them is a
dependency of prepwatch: ``prepwatch.integrations.huggingface`` (transformers
``Trainer``), ``prepwatch.integrations.lightning`` (Lightning ``Trainer``) and
``prepwatch.integrations.accelerate`` (a recipe for hand-written Accelerate loops).
See docs/integrations.md.
"""
