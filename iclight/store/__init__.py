"""The weights on disk: their layout, fetching and verifying, a base model's files, bounded output folders."""
