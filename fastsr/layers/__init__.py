"""Layers: thin nn.Modules over fastsr.ops."""

from fastsr.layers.spsa import SPSA

__all__ = ["SPSA"]
