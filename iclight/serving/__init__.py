"""Serving the Cog predictor: concurrent predictions sharing diffusion batches (`batcher.py`)."""
