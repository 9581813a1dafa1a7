"""LoRA training of a tenant voice on the base VITS engine: forced durations, decoder windows, spectral losses.

Each step: pick a clip (weighted by length) and a 1-2 s window; expand the frozen text encoder's prior
with the clip's aligned durations, sample it with a noise scale drawn in [0, max_noise_scale], run the
flow over the window plus context frames, decode the window with the LoRA-wrapped decoder and compare
it with the target audio (L1 log-mel + multi-resolution STFT). Deterministic for a seed; checkpoints
every `checkpoint_every` steps and resumes from the latest one; stops at `steps` or `max_minutes`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from chorus.adapters import lora
from chorus.adapters.align import HOP
from chorus.adapters.discriminator import MultiResolutionDiscriminator, discriminator_loss, generator_losses
from chorus.adapters.losses import envelope_loss, mel_loss, stft_loss
from chorus.adapters.trainset import TrainSet, build_trainset, load_clips
from chorus.engine.voice import load_base_voice
from chorus.files import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
RESUMABLE_CHANGES = {"steps", "max_minutes", "checkpoint_every", "threads"}
"""Settings a resumed run may change; any other difference from the checkpoint's settings is refused."""


class TrainConfig(BaseModel):
    """Settings of one adapter training run (recorded in the artifact's manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, description="seed for clip, window and noise draws")
    steps: int = Field(default=600, ge=1, description="optimizer steps; the learning-rate schedule spans them")
    max_minutes: float = Field(default=9.0, gt=0, description="wall-clock cap on the training loop")
    rank: int = Field(default=8, ge=1, le=64, description="LoRA rank")
    alpha: float = Field(default=16.0, gt=0, description="LoRA alpha (scale = alpha / rank)")
    targets: Literal["decoder", "decoder+flow"] = Field(default="decoder", description="modules with LoRA")
    lr: float = Field(default=1e-3, gt=0, lt=1, description="Adam learning rate for decoder LoRA")
    flow_lr: float = Field(default=2e-4, gt=0, lt=1, description="learning rate for flow LoRA (lower: it diverges)")
    clip_norm: float = Field(default=1.0, gt=0, description="gradient norm clip for decoder LoRA")
    flow_clip_norm: float = Field(default=0.2, gt=0, description="gradient norm clip for flow LoRA")
    pitch_path: Literal["auto", "psola", "resample", "split", "world", "none"] = Field(
        default="auto", description="how the fitted pitch factor is applied (chorus.adapters.pitch.PITCH_PATHS)")
    target_pitch: Literal["contour", "median", "as-is"] = Field(
        default="contour", description="where the path PSOLAs its output, bring the training clips' pitch to the "
        "base voice's: its rendering's contour, its median, or not at all (chorus.adapters.trainset.TARGET_PITCH)")
    min_window_s: float = Field(default=1.0, gt=0.1, description="shortest decoder window")
    max_window_s: float = Field(default=2.0, gt=0.1, description="longest decoder window")
    context_frames: int = Field(default=32, ge=0, description="flow context frames either side of a window")
    max_noise_scale: float = Field(default=0.2, ge=0, le=1.5, description="latent noise scale drawn in [0, this]")
    mel_weight: float = Field(default=1.0, ge=0, description="weight of the L1 log-mel loss")
    stft_weight: float = Field(default=1.0, ge=0, description="weight of the multi-resolution STFT loss")
    envelope_weight: float = Field(default=0.0, ge=0, description="weight of the pitch-blind spectral-envelope loss")
    adv_weight: float = Field(default=0.0, ge=0, description="weight of the adversarial loss (0: no discriminator)")
    fm_weight: float = Field(default=0.0, ge=0, description="weight of the discriminator feature-matching loss")
    disc_lr: float = Field(default=2e-4, gt=0, lt=1, description="discriminator learning rate")
    checkpoint_every: int = Field(default=100, ge=1, description="steps between checkpoints")
    threads: int = Field(default=2, ge=1, le=64, description="torch CPU threads")

    @model_validator(mode="after")
    def _windows(self) -> "TrainConfig":
        if self.max_window_s < self.min_window_s:
            raise ValueError(f"max_window_s {self.max_window_s} is below min_window_s {self.min_window_s}")
        if self.mel_weight == 0 and self.stft_weight == 0 and self.envelope_weight == 0:
            raise ValueError("mel_weight, stft_weight and envelope_weight are all 0: nothing to train on")
        return self


class VoiceProfile(BaseModel):
    """What the adapted voice applies around the LoRA decoder at synthesis time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pitch_factor: float = Field(default=1.0, gt=0.25, lt=4.0, description="pitch factor r (target / base median f0)")
    pitch_method: Literal["split", "resample", "psola", "world"] = Field(
        default="resample", description="how r is applied (chorus.adapters.pitch.PITCH_PATHS)")
    resample_factor: float = Field(
        default=1.0, gt=0.25, lt=4.0, description="split path: resample by this (formants and pitch), PSOLA the rest")
    length_scale: float = Field(default=1.0, gt=0.2, lt=5.0, description="model-domain length scale")


def profile_of(trainset: TrainSet) -> VoiceProfile:
    """The voice profile fitted with a training set (what synthesis applies around the engine)."""
    return VoiceProfile(pitch_factor=trainset.pitch_factor, length_scale=trainset.length_scale,
                        pitch_method="resample" if trainset.pitch_path == "none" else trainset.pitch_path,
                        resample_factor=trainset.resample_factor)


@dataclass
class TrainResult:
    """A trained peft model with its profile and what the run did."""

    peft_model: object
    profile: VoiceProfile
    config: TrainConfig
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    f0_base: float = float("nan")
    f0_target: float = float("nan")


def _lr_factor(step: int, total: int, warmup: int = 20) -> float:
    """Linear warm-up, then cosine decay to 10% of the rate at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _optimizer(peft_model, cfg: TrainConfig) -> torch.optim.Optimizer:
    dec = [p for n, p in peft_model.named_parameters() if p.requires_grad and ".dec." in n]
    flow = [p for n, p in peft_model.named_parameters() if p.requires_grad and ".flow." in n]
    groups = [{"params": dec, "lr": cfg.lr, "base_lr": cfg.lr, "clip": cfg.clip_norm}]
    if flow:
        groups.append({"params": flow, "lr": cfg.flow_lr, "base_lr": cfg.flow_lr, "clip": cfg.flow_clip_norm})
    return torch.optim.Adam(groups, betas=(0.8, 0.99))


@torch.no_grad()
def _priors(model, trainset: TrainSet) -> list:
    """The frozen text encoder's per-frame prior for each clip, with its aligned durations."""
    out = []
    for clip in trainset.clips:
        ids = clip.ids.unsqueeze(0)
        enc = model.encode_text(ids, torch.tensor([ids.shape[1]]))
        out.append(model.expand_prior(enc.m_p, enc.logs_p, clip.durations.unsqueeze(0)))
    return out


def _window(model, prior, clip, cfg: TrainConfig, gen: torch.Generator, sr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded audio and target audio [1, S] of one random window of one clip."""
    frames = int(prior.y_lengths[0])
    lo, hi = int(cfg.min_window_s * sr / HOP), int(cfg.max_window_s * sr / HOP)
    width = min(frames, int(torch.randint(lo, hi + 1, (1,), generator=gen)))
    start = int(torch.randint(0, frames - width + 1, (1,), generator=gen))
    noise = float(torch.rand((1,), generator=gen)) * cfg.max_noise_scale
    a, b = max(0, start - cfg.context_frames), min(frames, start + width + cfg.context_frames)
    m, logs = prior.m_p[:, :, a:b], prior.logs_p[:, :, a:b]
    z_p = m + torch.randn(m.shape, generator=gen) * torch.exp(logs) * noise
    mask = torch.ones(1, 1, b - a)
    z = model.flow_reverse(z_p, mask)[:, :, start - a:start - a + width]
    pred = model.decode(z, torch.ones(1, 1, width))
    return pred, clip.audio[start * HOP:(start + width) * HOP].unsqueeze(0)


def _save_checkpoint(path: Path, cfg: TrainConfig, step: int, seconds: float, peft_model, opt, gen, losses,
                     disc=None) -> None:
    state = {"config": cfg.model_dump(), "step": step, "seconds": seconds, "lora": lora.lora_state(peft_model),
             "opt": opt.state_dict(), "gen": gen.get_state(), "losses": losses}
    if disc is not None:
        state["disc"], state["disc_opt"] = disc[0].state_dict(), disc[1].state_dict()
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def train_adapter(dataset_dir: Path | str, cfg: TrainConfig | None = None, checkpoint_dir: Path | str | None = None,
                  on_step: Callable[[int, float], None] | None = None, trainset: TrainSet | None = None,
                  progress: bool = True) -> TrainResult:
    """Train a LoRA voice adapter from a prepared dataset; resumes from `checkpoint_dir` if it holds one."""
    from chorus.engine.weights import load_vits_model

    cfg = cfg or TrainConfig()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    voice = load_base_voice()
    model = load_vits_model(voice)
    if trainset is None:
        trainset = build_trainset(load_clips(dataset_dir), model, voice, cfg.pitch_path, cfg.target_pitch)
    priors = _priors(model, trainset)
    peft_model = lora.add_lora(model, cfg.targets, cfg.rank, cfg.alpha)
    engine = lora.engine_of(peft_model)
    opt = _optimizer(peft_model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    disc = None
    if cfg.adv_weight > 0 or cfg.fm_weight > 0:
        net = MultiResolutionDiscriminator()
        disc = (net, torch.optim.Adam(net.parameters(), cfg.disc_lr, betas=(0.8, 0.99)))
    step, seconds, losses = 0, 0.0, []
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    if ckpt and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        changed = {k: (v, state["config"].get(k)) for k, v in cfg.model_dump().items()
                   if k not in RESUMABLE_CHANGES and state["config"].get(k) != v}
        if changed:
            raise ValueError(f"checkpoint {ckpt} was made with other settings {changed} (now, then): "
                             "use another checkpoint_dir or delete it")
        lora.load_lora_state(peft_model, state["lora"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, seconds, losses = state["step"], state["seconds"], state["losses"]
        if disc is not None:
            disc[0].load_state_dict(state["disc"])
            disc[1].load_state_dict(state["disc_opt"])
    if ckpt:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    weights = torch.tensor([float(len(c.audio)) for c in trainset.clips])
    engine.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="adapter", unit="step")
    started = time.monotonic() - seconds
    while step < cfg.steps and time.monotonic() - started < cfg.max_minutes * 60:
        i = int(torch.multinomial(weights, 1, generator=gen))
        pred, target = _window(engine, priors[i], trainset.clips[i], cfg, gen, voice.sample_rate)
        loss = pred.new_zeros(())
        if cfg.mel_weight:
            loss = loss + cfg.mel_weight * mel_loss(pred, target, voice.sample_rate)
        if cfg.stft_weight:
            loss = loss + cfg.stft_weight * stft_loss(pred, target)
        if cfg.envelope_weight:
            loss = loss + cfg.envelope_weight * envelope_loss(pred, target)
        if disc is not None:
            disc[1].zero_grad(set_to_none=True)
            discriminator_loss(disc[0], target, pred).backward()
            disc[1].step()
            adv, fm = generator_losses(disc[0], target, pred)
            loss = loss + cfg.adv_weight * adv + cfg.fm_weight * fm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], group["clip"])
            group["lr"] = group["base_lr"] * _lr_factor(step, cfg.steps)
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        if ckpt and step % cfg.checkpoint_every == 0:
            _save_checkpoint(ckpt, cfg, step, time.monotonic() - started, peft_model, opt, gen, losses, disc)
        if on_step:
            on_step(step, losses[-1])
    bar.close()
    engine.eval()
    return TrainResult(peft_model, profile_of(trainset), cfg, step, time.monotonic() - started, losses,
                       trainset.f0_base, trainset.f0_target)
