"""Chorus: multi-tenant text-to-speech on one shared VITS base model with per-voice LoRA adapters."""

__version__ = "0.1.0"
