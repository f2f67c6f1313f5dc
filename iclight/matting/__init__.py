"""Cutting the subject out: the matting choice, BriaRMBG-1.4, BiRefNet and its Swin backbone."""
