"""Pixels and frames: images in and out, the light as a condition image, panoramas, colours, video."""
