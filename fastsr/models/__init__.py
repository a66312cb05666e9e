"""Whole networks: SPSAGAN's generator and discriminator, the VGG19 feature extractor, and
Stage-GAN's pix2pix U-Net, ResNet refiner and PatchGAN with the three-stage container."""

from fastsr.models.spsagan import SPSAGenerator, VGGStyleDiscriminator
from fastsr.models.stagegan import (
    NLayerDiscriminator,
    ResnetGenerator,
    StageGAN,
    StageGANUpscaler,
    UnetGenerator,
)
from fastsr.models.vgg import VGG19FeatureExtractor

__all__ = ["SPSAGenerator", "VGG19FeatureExtractor", "VGGStyleDiscriminator"]
__all__ += ["NLayerDiscriminator", "ResnetGenerator", "StageGAN", "StageGANUpscaler", "UnetGenerator"]
