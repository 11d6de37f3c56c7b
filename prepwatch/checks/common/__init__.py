"""Pieces every capability shares: the component contract, the background worker that
keeps heavy work off the training loop, isolated random numbers for probes, and the
recognition of torchvision transforms. Nothing here knows about one capability."""
