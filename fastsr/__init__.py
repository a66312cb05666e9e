"""fastsr: semantic-prior super-resolution with fused Triton kernels and fast CPU paths."""

from fastsr.ops import spsa_attention, spsa_attention_reference

__version__ = "0.1.0"
__all__ = ["spsa_attention", "spsa_attention_reference", "__version__"]
