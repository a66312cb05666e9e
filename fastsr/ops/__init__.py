"""Functional ops: one file per op, each with its reference, CPU path, launchers and autograd."""

from fastsr.ops.spsa import spsa_attention, spsa_attention_reference

__all__ = ["spsa_attention", "spsa_attention_reference"]
