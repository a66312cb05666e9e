"""fastsr: semantic-prior super-resolution with fused Triton kernels and fast CPU paths."""

from fastsr.inference import Upscaler
from fastsr.layers import RRDB, SPSA, ResidualDenseBlock
from fastsr.models import RRDBNet, load_basicsr_state_dict, load_model
from fastsr.ops import spsa_attention, spsa_attention_reference

__version__ = "0.1.0"
__all__ = ["SPSA", "Upscaler", "spsa_attention", "spsa_attention_reference", "__version__"]
__all__ += ["RRDB", "RRDBNet", "ResidualDenseBlock", "load_basicsr_state_dict", "load_model"]
