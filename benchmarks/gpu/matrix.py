"""What a GPU deployment runs, feature by feature: every speed setting of a deployment (fused QKV,
the UNet's graphs, torch.compile, channels_last) through every feature that reaches the UNet, each
against plain eager on the same inputs, with what served each call (graph replays, compiled code,
or eager and why).

On CUDA it runs the real thing in the hosted dtypes: CUDA graph capture, Inductor. On the CPU
(`make test`) it emulates what does not need a GPU: a trace stands in for graph capture (like a
CUDA graph, it freezes what ran when it was recorded), torch.compile runs Dynamo alone, and
after the warm-up a call its compiled code cannot serve runs eager and is counted, as it would be
in a deployment. Every feature runs at a small size on the tiny stand-ins, so that every row is
cheap; each row is a fresh relighter, loaded as a deployment loads it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iclight.core.options import SAMPLERS
from iclight.core.spec import relight_spec
from iclight.matting import mattes as matting
from iclight.matting.birefnet import estimate_matte
from iclight.models.compiled import Compiled
from iclight.models.cudagraphs import Forward, UNetGraphs
from iclight.models.speed import SpeedSettings
from iclight.pipeline import Relighter, standins

from .common import free

SIZE = dict(width=256, height=256, steps=2, highres_scale=1.0, seed=7)
LORA_STRENGTH = 0.1
HALF_MATTING_SIZE = 256  # BiRefNet's input side for the half-precision check (it serves at 1024)
EXACT, WITHIN = 0, 1  # grey levels from eager: a setting that runs the same kernels, and one that reorders sums


def trace_capture(forward: Forward, static: tuple[torch.Tensor, ...]) -> Forward:
    """A stand-in for CUDA graph capture that runs on the CPU: a trace replays the operations that
    ran when it was recorded, with the values it read then (a LoRA's scale, an attention
    processor, a Python branch), on new inputs of the same shapes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on values it freezes: freezing them is the point
        return torch.jit.trace(lambda *inputs: forward(*inputs), static, check_trace=False)


@dataclass(frozen=True)
class Setting:
    """One way a deployment loads: its speed settings, and LoRAs it serves to every relight."""

    name: str
    speed: SpeedSettings
    tolerance: int = WITHIN  # grey levels from eager
    boot_loras: bool = False  # LoRA A as the deployment's LoRAs (ICLIGHT_LORAS): the warm-up runs it
    features: tuple[str, ...] | None = None  # None: every feature


def settings(device: torch.device) -> tuple[Setting, ...]:
    """The rows, after plain eager: each setting alone, the CUDA defaults, and compiling as a
    deployment does (`ICLIGHT_COMPILE=1`), also with a LoRA of its own. On the CPU, where fused QKV
    and the graphs each give eager's pixels exactly, one row runs them together (the CUDA defaults)."""
    cuda = device.type == "cuda"
    # As ICLIGHT_COMPILE=1 loads on CUDA; on the CPU without channels_last (the CPU's own default),
    # since there the convolutions' kernel choice for it is a guard on the batch (2 to 15): batch 1
    # (cfg 1) would need compiling again. channels_last's pixels have their own row. The CPU's
    # backend is Dynamo alone: what it emulates is where the guards let compiled code serve.
    compiled = SpeedSettings(
        fused_qkv=True, channels_last=cuda, compile=True, compile_backend="inductor" if cuda else "eager"
    )
    exact = WITHIN if cuda else EXACT  # fused QKV's sums: exact on the CPU, within a grey level on CUDA
    alone = (
        Setting("fused QKV", SpeedSettings(fused_qkv=True)),
        Setting("UNet graphs", SpeedSettings(unet_graphs=True), EXACT),
    )
    return (
        *(alone if cuda else ()),
        Setting("the CUDA defaults: fused QKV, UNet graphs", SpeedSettings(fused_qkv=True, unet_graphs=True), exact),
        Setting("channels_last", SpeedSettings(channels_last=True)),
        Setting("compiled (ICLIGHT_COMPILE=1)", compiled),
        Setting("compiled, LoRA A served to every relight", compiled, boot_loras=True, features=("plain", "LoRAs")),
    )


@dataclass
class Inputs:
    """What the features relight: subjects with their masks, a background, two LoRAs, a panorama."""

    subjects: list[np.ndarray]
    masks: list[np.ndarray]
    background: np.ndarray
    lora_a: str
    lora_b: str
    panorama: np.ndarray

    @classmethod
    def make(cls, weights: Path, folder: Path) -> Inputs:
        subjects = [_subject((96, 128), 0), _subject((160, 120), 1), _subject((96, 128), 2)]
        masks = [np.where(s.mean(axis=2) > 90, 255, 0).astype(np.uint8) for s in subjects]
        ramp = np.linspace(20, 235, 160, dtype=np.float32)[None, :, None]
        background = np.broadcast_to(ramp * np.array([1.0, 0.8, 0.6]), (120, 160, 3)).astype(np.uint8)
        # Mild LoRAs: a strong random one makes the tiny UNet chaotic, where a rounding difference
        # between two settings grows into another image.
        a = standins.write_lora(weights, folder / "lora-a.safetensors", "diffusers", seed=1, strength=LORA_STRENGTH)
        b = standins.write_lora(weights, folder / "lora-b.safetensors", "kohya", seed=2, strength=LORA_STRENGTH)
        yy, xx = np.mgrid[0:64, 0:128]
        sky = np.exp(-((xx - 40) ** 2 + (yy - 20) ** 2) / 60.0)[..., None] * 40.0 + 0.3
        return cls(subjects, masks, background, str(a), str(b), (sky * [1.0, 0.9, 0.8]).astype(np.float32))


def _subject(size: tuple[int, int], seed: int) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (min(w, h) / 3) ** 2
    image = np.random.default_rng(seed).integers(20, 60, (h, w, 3), dtype=np.uint8)
    image[disc] = (200 - 30 * seed, 150, 100 + 40 * seed)
    return image


Feature = Callable[[Relighter, Inputs], list[np.ndarray]]


def _images(result) -> list[np.ndarray]:
    return [np.asarray(image) for image in result.images]


def _relight(r: Relighter, i: Inputs, k: int = 0, **options: Any) -> list[np.ndarray]:
    options = {"loras": [], **SIZE, **options}
    return _images(r.relight(i.subjects[k], i.background, "sunlight", mask=i.masks[k], **options))


def _shared(r: Relighter, i: Inputs) -> list[np.ndarray]:
    """Two requests of other prompts and subject sizes in one diffusion batch, as the server shares them."""
    specs = [
        relight_spec(i.subjects[k], i.background, prompt, mask=i.masks[k], loras=[], **SIZE)
        for k, prompt in ((0, "sunlight"), (1, "neon light, city at night"))
    ]
    return [image for result in r.run_shared(specs) for image in _images(result)]


def _loras(r: Relighter, i: Inputs) -> list[np.ndarray]:
    """LoRA A, then B, then none, then A and B together, on one relighter."""
    sets = ([i.lora_a], [f"{i.lora_b}:0.8"], [], [i.lora_a, f"{i.lora_b}:0.5"])
    return [image for loras in sets for image in _relight(r, i, loras=loras)]


def _fc(r: Relighter, i: Inputs, **options: Any) -> list[np.ndarray]:
    """The fc model: the subject and a light, no background."""
    options = {"loras": [], **SIZE, "model": "fc", "mask": i.masks[0], **options}
    return _images(r.relight(i.subjects[0], None, "sunlight", **options))


def _fc_sequence(r: Relighter, i: Inputs) -> list[np.ndarray]:
    """Three whole frames relit with fc as Light-A-Video relights them: one window, its noise, no high-res pass."""
    frames = [i.subjects[0], i.subjects[2], i.subjects[0]]
    options = dict(model="fc", matting="none", window=0, batch_noise=True, highres_pass=False, consistency=0.5)
    return _images(r.relight_sequence(frames, None, "sunlight", light_source="Left Light", loras=[], **SIZE, **options))


def _sequence(r: Relighter, i: Inputs, loras: list[str]) -> list[np.ndarray]:
    """Three frames with consistent light attention, in windows of two: the second window carries
    references of the first."""
    frames, masks = [i.subjects[0], i.subjects[2], i.subjects[0]], [i.masks[0], i.masks[2], i.masks[0]]
    options = {**SIZE, "loras": loras, "masks": masks, "window": 2, "consistency": 0.5}
    return _images(r.relight_sequence(frames, i.background, "sunlight", **options))


# In this order on one relighter: those that load LoRAs last (a LoRA unfuses fused projections for good).
FEATURES: dict[str, Feature] = {
    "plain": lambda r, i: _relight(r, i),
    "shared batch": _shared,
    **{f"sampler {name}": (lambda r, i, n=name: _relight(r, i, sampler=n)) for name in SAMPLERS[1:]},
    "cfg 1": lambda r, i: _relight(r, i, cfg=1.0),  # no guidance: a batch of one
    "light_start": lambda r, i: _relight(r, i, light_start=0.8, light_source="Left Light"),
    "clip_skip 2": lambda r, i: _relight(r, i, clip_skip=2),
    "HDRI": lambda r, i: _images(
        r.relight(i.subjects[0], None, "sunlight", mask=i.masks[0], hdri=i.panorama, loras=[], **SIZE)
    ),
    # its four relightings (the normal and ratio images divide by them, which magnifies any rounding in the dark)
    "compute_normal": lambda r, i: _relight(r, i, compute_normal=True)[-4:],
    "CLA sequence": lambda r, i: _sequence(r, i, []),
    "fc, Left Light": lambda r, i: _fc(r, i, light_source="Left Light"),  # its first pass from the light
    "fc, no light": lambda r, i: _fc(r, i),  # from noise
    "fc, whole frame, no high-res": lambda r, i: _fc(r, i, mask=None, matting="none", highres_pass=False),
    "fc sequence, Light-A-Video's way": _fc_sequence,
    "LoRAs": _loras,
    "CLA sequence, LoRA": lambda r, i: _sequence(r, i, [i.lora_a]),
}
# Where compiled code cannot serve without compiling again, so runs eager, logged: a computation
# the warm-up did not run (LoRAs not served to every relight, consistent light attention).
NOT_WARMED = ("LoRAs", "CLA sequence", "CLA sequence, LoRA", "fc sequence, Light-A-Video's way")
FC_FEATURES = tuple(name for name in FEATURES if name.startswith("fc"))


@dataclass
class Row:
    setting: str
    feature: str
    max_diff: float
    mean_diff: float
    tolerance: int
    seconds: float
    served: dict[str, Any] = field(default_factory=dict)  # what served the UNet's calls, this feature's

    @property
    def within(self) -> bool:
        return self.max_diff <= self.tolerance


def served(relighter: Relighter) -> dict[str, Any]:
    """What the UNets' calls (each model's) went through so far: graph replays, compiled code, eager."""
    found: dict[str, Any] = {"kind": "eager"}
    for unet in relighter.unets.values():
        fast = unet.fast
        kind = "graphs" if isinstance(fast, UNetGraphs) else "compiled" if isinstance(fast, Compiled) else None
        if kind is None:
            continue
        found["kind"] = kind
        for key, value in fast.summary().items():
            found[key] = found.get(key, [] if isinstance(value, list) else 0) + value
    return found


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    found = {k: v - before.get(k, 0) if isinstance(v, int) else v for k, v in after.items()}
    if "reasons" in after:
        found["reasons"] = after["reasons"][len(before.get("reasons", [])) :]
    return found


def load(setting: Setting | None, weights: Path, device: torch.device, inputs: Inputs) -> Relighter:
    """A relighter as a deployment loads it with `setting` (None: plain eager), serving both models
    where the row runs an fc feature."""
    speed = setting.speed if setting else SpeedSettings()
    capture = trace_capture if speed.unet_graphs and device.type != "cuda" else None
    loras = [inputs.lora_a] if setting and setting.boot_loras else []
    fc = setting is None or setting.features is None or bool(set(setting.features) & set(FC_FEATURES))
    model = "both" if fc else "fbc"
    return Relighter.load(weights, device=str(device), speed=speed, loras=loras, graph_capture=capture, model=model)


def reference(weights: Path, device: torch.device, inputs: Inputs) -> dict[str, list[np.ndarray]]:
    """Every feature's images from plain eager."""
    eager = load(None, weights, device, inputs)
    try:
        return {name: feature(eager, inputs) for name, feature in FEATURES.items()}
    finally:
        del eager
        free()


def run_setting(
    setting: Setting, weights: Path, device: torch.device, inputs: Inputs, eager: dict[str, list[np.ndarray]]
) -> list[Row]:
    """Every feature of `setting`'s row against eager's images."""
    relighter = load(setting, weights, device, inputs)
    rows = []
    try:
        for name, feature in FEATURES.items():
            if setting.features is not None and name not in setting.features:
                continue
            before, start = served(relighter), time.perf_counter()
            images = feature(relighter, inputs)
            seconds = time.perf_counter() - start
            diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(images, eager[name], strict=True)]
            largest, mean = float(max(d.max() for d in diffs)), float(np.mean([d.mean() for d in diffs]))
            what = _delta(before, served(relighter))
            rows.append(Row(setting.name, name, largest, mean, setting.tolerance, seconds, what))
    finally:
        del relighter
        free()
    return rows


def half_matting(weights: Path, device: torch.device, inputs: Inputs) -> dict[str, Any]:
    """BiRefNet (lite) in the half precision a deployment runs it in (float16 on CUDA; on the CPU
    bfloat16, where it has the instructions), against float32: the mattes, and a relight with the
    half-precision matte against one with the float32 matte."""
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    if device.type == "cpu" and not torch.backends.mkldnn.is_available():
        return {"skipped": "no bfloat16 kernels on this CPU"}
    if not (weights / matting.FILES[matting.BIREFNET_LITE][0]).is_file():
        standins.write_matting(weights, matting.BIREFNET_LITE)
    subject = inputs.subjects[1]
    mattes = {}
    for dtype in (torch.float32, half):
        model = matting.load(matting.BIREFNET_LITE, weights, device, dtype).model
        mattes[str(dtype).removeprefix("torch.")] = estimate_matte(model, subject, HALF_MATTING_SIZE)[..., 0]
        del model
    full, low = mattes.values()
    relighter = load(None, weights, device, inputs)
    try:
        images = [
            _relight(relighter, replace(inputs, masks=[(m * 255).round().astype(np.uint8)] * 3), k=1)[0]
            for m in (full, low)
        ]
    finally:
        del relighter
        free()
    return {
        "dtype": str(half).removeprefix("torch."),
        "matte_max_diff": float(np.abs(full - low).max()),
        "matte_mean_diff": float(np.abs(full - low).mean()),
        "relit_mean_diff": float(np.abs(images[0].astype(np.int16) - images[1].astype(np.int16)).mean()),
        "finite": bool(np.isfinite(low).all()),
    }
