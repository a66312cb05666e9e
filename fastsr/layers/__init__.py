"""Layers: thin nn.Modules over fastsr.ops."""

from fastsr.layers.rrdb import RRDB, ResidualDenseBlock, RRDBNet, load_basicsr_state_dict
from fastsr.layers.spsa import SPSA

__all__ = ["SPSA"]
__all__ += ["RRDB", "RRDBNet", "ResidualDenseBlock", "load_basicsr_state_dict"]
