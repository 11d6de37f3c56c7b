"""The hot path: what runs per batch in the training loop and per sample in workers."""
