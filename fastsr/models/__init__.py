"""Whole networks: SPSAGAN's generator and discriminator, the VGG19 feature extractor."""

from fastsr.models.spsagan import SPSAGenerator, VGGStyleDiscriminator
from fastsr.models.vgg import VGG19FeatureExtractor

__all__ = ["SPSAGenerator", "VGG19FeatureExtractor", "VGGStyleDiscriminator"]
