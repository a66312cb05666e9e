"""Whole networks: ESRGAN's RRDBNet, SPSAGAN's generator and discriminator, the VGG19 feature
extractor, pix2pix's U-Net, ResNet generator and PatchGAN, and Stage-GAN's three-stage container
and upscaler; the one model-file format and the table of generator kinds."""

from fastsr.models.kinds import KINDS, build_model, kind_of, load_model, save_model
from fastsr.models.model_file import MODEL_FORMAT, ModelFile, read_model_file
from fastsr.models.pix2pix import NLayerDiscriminator, ResnetGenerator, UnetGenerator, init_weights
from fastsr.models.rrdbnet import RRDBNet, convert_esrgan_state_dict, load_basicsr_state_dict
from fastsr.models.spsagan import SPSAGenerator, VGGStyleDiscriminator
from fastsr.models.stagegan import StageGAN, StageGANUpscaler, StageZeroSegmenter
from fastsr.models.vgg import VGG19FeatureExtractor

__all__ = ["RRDBNet", "SPSAGenerator", "StageGANUpscaler", "VGG19FeatureExtractor", "VGGStyleDiscriminator"]
__all__ += [
    "NLayerDiscriminator",
    "ResnetGenerator",
    "StageGAN",
    "StageZeroSegmenter",
    "UnetGenerator",
    "init_weights",
]
__all__ += [
    "KINDS",
    "MODEL_FORMAT",
    "ModelFile",
    "build_model",
    "kind_of",
    "convert_esrgan_state_dict",
    "load_basicsr_state_dict",
    "load_model",
    "read_model_file",
    "save_model",
]
