"""The IC-Light UNets: SD1.5 with a wider `conv_in` and merged offset weights: 12 channels for fbc
(noise, the subject's latent and the background's), 8 for fc (noise and the subject's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from safetensors import safe_open
from torch import nn

from ..core import constants as C

if TYPE_CHECKING:
    from .loras import Loras

MAPPED_WINDOW = 512 << 20
IN_CHANNELS = {model: 4 + channels for model, channels in C.MODEL_CONDITION_CHANNELS.items()}


def model_of(path: str | Path, name: str = "conv_in.weight") -> str:
    """The IC-Light model whose `conv_in` a weights file holds (an offset or a prepared UNet), read
    from its width; a ValueError naming the file where it is neither model's."""
    with safe_open(str(path), framework="pt") as f:
        width = f.get_slice(name).get_shape()[1] if name in set(f.keys()) else None
    found = [model for model, channels in IN_CHANNELS.items() if channels == width]
    if not found:
        widths = ", ".join(f"{c} ({m})" for m, c in IN_CHANNELS.items())
        raise ValueError(f"{path}: its {name} takes {width} channels, an IC-Light model's {widths}")
    return found[0]


def check_model(path: str | Path, model: str) -> None:
    """A ValueError where `path` holds another model's `conv_in` than `model`'s."""
    found = model_of(path)
    if found != model:
        raise ValueError(
            f"{path}: holds the {found} model's UNet (conv_in {IN_CHANNELS[found]} channels wide), not the {model} "
            f"model's ({IN_CHANNELS[model]})"
        )


@torch.no_grad()
def widen_conv_in(unet: UNet2DConditionModel, in_channels: int = C.UNET_IN_CHANNELS) -> None:
    """Give `conv_in` extra input channels that start at zero; the config still says 4,
    which is what the pipelines must see to size their latents."""
    old = unet.conv_in
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    new.weight.zero_()
    new.weight[:, : old.in_channels].copy_(old.weight)
    new.bias = old.bias
    unet.conv_in = new


def empty_unet(config_dir: str | Path, model: str = C.FBC) -> UNet2DConditionModel:
    """`model`'s widened UNet with no storage yet (meta tensors), to be filled by `assign`."""
    config = UNet2DConditionModel.load_config(config_dir)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    widen_conv_in(unet, IN_CHANNELS[model])
    return unet


@torch.no_grad()
def merged_state(
    base_path: str | Path | dict[str, torch.Tensor],
    offset_path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """`base + offset` for every key, widening `conv_in`, one tensor at a time.

    The base is a safetensors file or tensors already in memory (a converted single-file
    checkpoint: `basemodel.py`). Strict: both must have the same keys, with the offset's
    `conv_in.weight` as wide as its model's (12 channels for fbc, 8 for fc). The sum is taken in
    float32 and rounded to `dtype` once.
    """
    with _base_tensors(base_path) as (keys, get):
        with safe_open(str(offset_path), framework="pt", device="cpu") as offset:
            _check_keys(set(keys), set(offset.keys()), offset_path)
        state = {}
        for key, delta in _mapped_tensors(offset_path, keys):
            weight = get(key).float()
            if key == "conv_in.weight" and delta.shape[1] > weight.shape[1]:
                pad = weight.new_zeros(weight.shape[0], delta.shape[1] - weight.shape[1], *weight.shape[2:])
                weight = torch.cat([weight, pad], dim=1)
            if delta.shape != weight.shape:
                raise ValueError(f"{offset_path}: {key} has shape {tuple(delta.shape)}, expected {tuple(weight.shape)}")
            state[key] = weight.add_(delta).to(device=device, dtype=dtype)
    return state


@contextmanager
def _base_tensors(base: str | Path | dict[str, torch.Tensor]) -> Iterator[tuple[list[str], Callable]]:
    if isinstance(base, dict):
        yield list(base), lambda key: base[key].clone()
        return
    # pread gives each tensor its own storage in one go; adding into a mapped file's pages would
    # cost a copy-on-write fault per page instead.
    with safe_open(str(base), framework="pt", device="cpu", backend="pread") as f:
        yield list(f.keys()), f.get_tensor


def _mapped_tensors(path: str | Path, keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Zero-copy tensors from a mapped file, reopened every MAPPED_WINDOW bytes so that
    the pages already read are released instead of piling up in the resident set."""
    window, i = MAPPED_WINDOW, 0
    while i < len(keys):
        used = 0
        with safe_open(str(path), framework="pt", device="cpu") as f:
            while i < len(keys) and used < window:
                tensor = f.get_tensor(keys[i])
                used += tensor.numel() * tensor.element_size()
                yield keys[i], tensor
                i += 1


def _check_keys(base: set[str], offset: set[str], offset_path: str | Path) -> None:
    if base != offset:
        missing, extra = sorted(base - offset), sorted(offset - base)
        raise ValueError(
            f"{offset_path}: offset keys do not match the UNet "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})"
        )


class Fast(Protocol):
    """A faster way to make the same call of the UNet's core (`ConditionedUNet.core`): CUDA graphs of
    the eager UNet (`cudagraphs.UNetGraphs`) or its compiled code (`compiled.Compiled`), each keyed
    on `computation`, everything beyond the inputs that changes what a call computes."""

    def __call__(self, *inputs: torch.Tensor, computation: tuple = ()) -> torch.Tensor: ...


class ConditionedUNet(nn.Module):
    """Feeds the UNet its noisy latent joined with its condition: fbc's 8 channels (the subject's
    latent, then the background's), fc's 4 (the subject's).

    The condition travels in `cross_attention_kwargs["concat_conds"]`, so the stock diffusers
    pipelines drive it unchanged and no state is kept between calls. The join happens here, before
    the UNet's core: a graph or compiled code sees one joined sample whatever the condition's
    batch (one for a lone relight, one per image for a shared batch). With `fast` set (the speed
    settings, `speed.apply`), plain calls go through it, keyed on `computation()`: the active LoRAs
    (`adapters`) and the attention processors in place.
    """

    def __init__(self, unet: UNet2DConditionModel, adapters: Loras | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.adapters = adapters
        self.fast: Fast | None = None
        self._attention = [(name, m) for name, m in unet.named_modules() if isinstance(m, Attention)]

    def computation(self) -> tuple:
        """Everything beyond the inputs that changes what a call computes: the active LoRAs with
        their scales, and each attention layer's processor with its settings."""
        loras = self.adapters.active if self.adapters is not None else ()
        return loras, tuple(_describe(m.processor) for _, m in self._attention)

    @contextmanager
    def attention(self, processors: dict[str, object]) -> Iterator[None]:
        """These attention processors on their layers for the duration (one run's, as consistent
        light attention's), the ones they replace after."""
        modules = dict(self._attention)
        originals = {name: modules[name].processor for name in processors}
        try:
            for name, processor in processors.items():
                modules[name].set_processor(processor)
            yield
        finally:
            for name, processor in originals.items():
                modules[name].set_processor(processor)

    @property
    def config(self):
        return self.unet.config

    @property
    def model(self) -> str:
        """The IC-Light model this UNet is (fbc, fc), from its `conv_in`'s width."""
        return next(m for m, channels in IN_CHANNELS.items() if channels == self.unet.conv_in.in_channels)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, **kwargs):
        extra = dict(kwargs.pop("cross_attention_kwargs", None) or {})
        sample = _join(sample, extra.pop("concat_conds").to(sample))
        timestep = _timestep(timestep, sample.device)
        plain = not extra and all(v is None for k, v in kwargs.items() if k != "return_dict")
        if self.fast is not None and plain and torch.is_tensor(timestep):
            out = self.fast(sample, timestep, encoder_hidden_states, computation=self.computation())
            return UNet2DConditionOutput(sample=out) if kwargs.get("return_dict", True) else (out,)
        return self.unet(sample, timestep, encoder_hidden_states, cross_attention_kwargs=extra or None, **kwargs)

    def core(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """The noise prediction for a sample already joined with its condition: what a graph
        records and what is compiled."""
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


def _describe(processor: object) -> object:
    """A processor as a cache key: its own `cache_key` where it has settings, else its kind."""
    return getattr(processor, "cache_key", None) or type(processor).__qualname__


def _timestep(timestep, device: torch.device):
    """One dtype for every sampler's timesteps (integers for DPM-Solver, floats for Euler): the
    UNet makes a float embedding of either, so the values are the same, and a graph or compiled
    code serves every sampler."""
    return timestep.to(device=device, dtype=torch.float32) if torch.is_tensor(timestep) else timestep


def _join(sample: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    if cond.shape[0] == 1:
        cond = cond.expand(sample.shape[0], -1, -1, -1)  # one condition serves the whole batch
    else:  # one per image (a shared batch), for the negative and the positive prompt's halves
        cond = cond.repeat(sample.shape[0] // cond.shape[0], 1, 1, 1)
    return torch.cat([sample, cond], dim=1)
