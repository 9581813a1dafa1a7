"""Generated adapter artifacts for tests: a real peft LoRA on a tiny Conv1d network, saved to the contract.

The registry, artifact and operator tests need real artifacts (real peft files, real safetensors) but
not a trained voice; this makes one in well under a second after peft is imported.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from chorus.adapters.artifact import ChorusManifest, QualityRecord, write_artifact
from chorus.adapters.gate import GateThresholds, QualityMetrics, evaluate_gate

# A stand-in dataset hash for artifacts not trained on a prepared dataset.
TEST_DATASET_HASH = "0" * 64


class TinyConvNet(nn.Module):
    """Two Conv1d layers (dilated like the decoder's resblocks) with names peft can target."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.pre = nn.Conv1d(4, channels, 3, padding=1)
        self.post = nn.Conv1d(channels, 4, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Conv, leaky ReLU, conv."""
        return self.post(torch.nn.functional.leaky_relu(self.pre(x), 0.1))


def tiny_peft_model(seed: int = 0, rank: int = 4):
    """TinyConvNet (seeded) wrapped with a LoRA adapter whose weights are random (non-zero), eval mode."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(TinyConvNet(), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["pre", "post"],
                                                     init_lora_weights=False))
    # peft does not copy `dilation` to lora_A (peft #3697): match the base layer, as the engine must.
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            for lora_a in module.lora_A.values():
                lora_a.dilation = module.base_layer.dilation
    return model.eval()


def passing_quality() -> QualityRecord:
    """A quality record that passes the default gate (plausible numbers, not measured)."""
    metrics = QualityMetrics(similarity_base=0.69, similarity_adapted=0.85, similarity_ceiling=0.88,
                             wer_base=0.02, wer_adapted=0.03, dnsmos_base=3.3, dnsmos_adapted=3.1,
                             dnsmos_target=3.0, f0_base=90.0, f0_adapted=140.0, f0_target=145.0,
                             adapter_bytes=400_000)
    thresholds = GateThresholds()
    return QualityRecord(metrics=metrics, thresholds=thresholds, gate=evaluate_gate(metrics, thresholds))


def make_artifact(
    out_dir: str | Path,
    *,
    tenant: str = "acme",
    voice: str = "narrator",
    base_fingerprint: str,
    seed: int = 0,
    quality: QualityRecord | None = None,
) -> ChorusManifest:
    """Write a complete artifact (peft files + manifest) from a seeded tiny LoRA model."""
    return write_artifact(tiny_peft_model(seed), out_dir, tenant=tenant, voice=voice, base_fingerprint=base_fingerprint,
                          dataset_hash=TEST_DATASET_HASH, training={"steps": 0, "seed": seed, "rank": 4},
                          quality=quality, profile={"pitch_factor": 1.0, "length_scale": 1.0})


def engine_peft_model(model, seed: int = 0, scale: float = 0.02, targets: str = "decoder"):
    """A LoRA (rank 8) on a copy of the real engine with seeded random factors: a different, still speaking voice."""
    import copy

    from chorus.adapters.lora import add_lora

    peft_model = add_lora(copy.deepcopy(model), targets=targets)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return peft_model.eval()


def make_engine_artifact(out_dir: str | Path, model, *, tenant: str, voice: str, base_fingerprint: str,
                         seed: int = 0, profile: dict | None = None, scale: float = 0.02,
                         targets: str = "decoder") -> ChorusManifest:
    """A complete artifact for the real engine (random LoRA from `seed`, a passing quality record, `profile`)."""
    return write_artifact(engine_peft_model(model, seed, scale, targets), out_dir, tenant=tenant, voice=voice,
                          base_fingerprint=base_fingerprint, dataset_hash=TEST_DATASET_HASH,
                          training={"steps": 0, "seed": seed, "rank": 8}, quality=passing_quality(),
                          profile=profile or {"pitch_factor": 1.0, "pitch_method": "resample", "length_scale": 1.0})
