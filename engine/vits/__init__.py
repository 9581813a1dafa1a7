"""PyTorch VITS inference network (text encoder, stochastic durations, flow, HiFi-GAN)."""

from .hparams import VitsHParams
from .model import InferResult, Prior, VitsModel
from .text_encoder import TextEncoding

__all__ = ["InferResult", "Prior", "TextEncoding", "VitsHParams", "VitsModel"]
