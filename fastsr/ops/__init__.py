"""Functional ops: one file per op, each with its reference, CPU path, launchers and autograd;
``imresize`` (MATLAB-compatible bicubic) is a plain differentiable torch op."""

from fastsr.ops.dense_block import dense_block, dense_block_reference, dense_connections
from fastsr.ops.imresize import imresize
from fastsr.ops.spsa import spsa_attention, spsa_attention_maps, spsa_attention_reference

__all__ = [
    "dense_block",
    "dense_block_reference",
    "dense_connections",
    "imresize",
    "spsa_attention",
    "spsa_attention_maps",
    "spsa_attention_reference",
]
