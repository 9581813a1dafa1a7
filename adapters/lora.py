"""LoRA layers on the VITS engine with peft: which modules, peft's dilation bug, merging for inference."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from chorus.engine.vits import VitsModel

DECODER_TARGETS = r"dec\.(conv_pre|conv_post|resblocks\.\d+\.convs\.\d+)"
"""Every Conv1d of the HiFi-GAN decoder (its ConvTranspose1d upsamplers are not supported by peft)."""

FLOW_TARGETS = r"flow\.flows\.\d+\.enc\.(in_layers|res_skip_layers)\.\d+"
"""The coupling flow's WaveNet convolutions."""

TARGET_SETS = {"decoder": DECODER_TARGETS, "decoder+flow": f"({DECODER_TARGETS}|{FLOW_TARGETS})"}
"""Named module sets a TrainConfig can choose."""

ADAPTER_NAME = "default"


def fix_lora_dilation(model: nn.Module) -> int:
    """Copy each LoRA-wrapped Conv1d's dilation onto its `lora_A` conv; returns how many were fixed.

    peft 0.21 builds `lora_A` without the base layer's dilation (peft issue #3697), so dilated convs
    fail with a shape error; call after every get_peft_model / add_adapter / load_adapter.
    """
    fixed = 0
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(base, nn.Conv1d) or lora_a is None:
            continue
        for conv in lora_a.values():
            if conv.dilation != base.dilation:
                conv.dilation = base.dilation
                fixed += 1
    return fixed


def lora_config(targets: str, rank: int, alpha: float):
    """A peft LoraConfig over the named module set."""
    from peft import LoraConfig

    if targets not in TARGET_SETS:
        raise ValueError(f"unknown LoRA target set {targets!r}; valid: {sorted(TARGET_SETS)}")
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGET_SETS[targets], lora_dropout=0.0,
                      bias="none", init_lora_weights=True)


def add_lora(model: VitsModel, targets: str = "decoder", rank: int = 8, alpha: float = 16.0):
    """Wrap the engine in a peft model with LoRA on `targets`; only LoRA factors stay trainable."""
    from peft import get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    peft_model = get_peft_model(model, lora_config(targets, rank, alpha))
    fix_lora_dilation(peft_model)
    return peft_model


def engine_of(peft_model) -> VitsModel:
    """The VitsModel inside a peft wrapper (the LoRA layers live in it)."""
    return peft_model.base_model.model


def lora_state(peft_model) -> dict[str, torch.Tensor]:
    """The trainable LoRA tensors (name -> tensor copy), as peft saves them."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def load_lora_state(peft_model, state: dict[str, torch.Tensor]) -> None:
    """Put saved LoRA tensors back into a peft model built with the same config."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, state)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
    if missing:
        raise ValueError(f"LoRA tensors not in this model: {missing[:5]}")


def merged_engine(peft_model) -> VitsModel:
    """A plain VitsModel with the LoRA merged into its weights (no run-time cost); consumes the wrapper."""
    return peft_model.merge_and_unload().eval()


def load_adapter_dir(adapter_dir: Path | str, base: VitsModel) -> VitsModel:
    """Load peft's adapter_config.json + adapter_model.safetensors onto `base` and merge it."""
    from peft import PeftModel

    for p in base.parameters():
        p.requires_grad_(False)
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    fix_lora_dilation(peft_model)
    return merged_engine(peft_model)
