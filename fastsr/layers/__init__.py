"""Layers: thin nn.Modules over fastsr.ops: the SPSA layer and ESRGAN's (sparse) dense blocks."""

from fastsr.layers.rrdb import RRDB, ResidualDenseBlock
from fastsr.layers.spsa import SPSA

__all__ = ["RRDB", "ResidualDenseBlock", "SPSA"]
