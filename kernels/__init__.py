"""Triton kernels (@triton.jit only), installed as fastsr.kernels; imported lazily."""
