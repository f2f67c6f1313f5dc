"""LoRAs over the relighting UNet and text encoder, through diffusers' LoRA loading (peft): each
file loaded once as an adapter and kept; a relight activates its own set with its scales, without
reloading anything. kohya/A1111 and diffusers layouts, `.safetensors` only."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.lora import Lora
from ..core.validation import InputError
from ..store import fetch
from .fusion import unfuse_qkv

if TYPE_CHECKING:  # loaded with the adapters: the command line checks `--lora` without torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

log = logging.getLogger("iclight")


class Loras:
    """The adapters loaded into the UNets served (one per IC-Light model: a LoRA of SD1.5 fits
    both) and their one text encoder, and which are active at what scale."""

    def __init__(self, unets: tuple[UNet2DConditionModel, ...], text_encoder: CLIPTextModel) -> None:
        self.unets, self.text_encoder = unets, text_encoder
        self.names: dict[tuple[str, str], str] = {}  # (path, sha256) -> adapter name
        self.in_text: set[str] = set()  # adapters with text-encoder weights
        self.active: tuple[tuple[str, float], ...] = ()
        self._count = 0  # adapters named so far

    @property
    def text_key(self) -> tuple[tuple[str, float], ...]:
        """The active adapters that change the text encoder: part of every prompt embedding's key."""
        return tuple((name, scale) for name, scale in self.active if name in self.in_text)

    def activate(self, loras: tuple[Lora, ...]) -> bool:
        """Make exactly `loras` active (loading those not yet loaded); True if anything changed.
        Where one fails to load, the set active before stays active, on the models too (peft makes
        an adapter it injects active in the layers it creates)."""
        try:
            wanted = tuple((self._adapter(lora), lora.scale) for lora in loras)
        except BaseException:
            self._apply(self.active)
            raise
        if wanted == self.active:
            return False
        self._apply(wanted)
        return True

    def _apply(self, wanted: tuple[tuple[str, float], ...]) -> None:
        """The models' adapters set to `wanted` (names and scales), the rest disabled."""
        from diffusers.loaders.lora_base import (
            disable_lora_for_text_encoder,
            enable_lora_for_text_encoder,
            set_adapters_for_text_encoder,
        )

        names, scales = [n for n, _ in wanted], [s for _, s in wanted]
        text = [(n, s) for n, s in wanted if n in self.in_text]
        for unet in self.unets:
            if names:  # (disabled adapters stay disabled until enabled again, whatever is set active)
                unet.enable_lora()
                unet.set_adapters(names, scales)
            elif _injected(unet):
                unet.disable_lora()
        if text:
            enable_lora_for_text_encoder(self.text_encoder)
            set_adapters_for_text_encoder([n for n, _ in text], self.text_encoder, [s for _, s in text])
        elif self._in_text_encoder():
            disable_lora_for_text_encoder(self.text_encoder)
        # peft makes the adapters it activates trainable: frozen like the rest, or a graph capture
        # takes their weights for values to differentiate (a trace refuses them; CUDA graph
        # capture would record a backward pass too)
        for module in (*self.unets, self.text_encoder):
            module.requires_grad_(False)
        self.active = wanted

    def _in_text_encoder(self) -> bool:
        return bool(getattr(self.text_encoder, "peft_config", None))

    def _adapter(self, lora: Lora) -> str:
        path = Path(lora.path)
        key = (lora.path, fetch.HashCache(path.parent).sha256(path.name))  # a changed file loads anew
        if key not in self.names:
            self.names[key] = self._load(path, f"lora{self._count}")
        return self.names[key]

    def _load(self, path: Path, name: str) -> str:
        import torch
        from diffusers.loaders import StableDiffusionLoraLoaderMixin
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self._count += 1  # a name is never given twice, even to a file that failed half-way
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise InputError(f"loras: {path} is not a readable .safetensors file ({e})") from e
        try:
            state, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(state)
        except (ValueError, KeyError) as e:
            raise InputError(f"loras: {path} is not a LoRA diffusers can read ({e})") from e
        unet_keys = {k: v for k, v in state.items() if k.startswith("unet.")}
        text_keys = {k: v for k, v in state.items() if k.startswith("text_encoder.")}
        if not unet_keys and not text_keys:
            raise InputError(f"loras: {path} has no UNet or text-encoder weights of an SD1.5 LoRA")
        if any([unfuse_qkv(unet) for unet in self.unets]):
            log.info("unfused the UNet's QKV projections for LoRAs")
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # peft warns whenever a second adapter joins a model: keeping several is the point here
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                for unet in self.unets if unet_keys else ():  # (a copy each: the loader may consume them)
                    load_unet_lora = StableDiffusionLoraLoaderMixin.load_lora_into_unet
                    load_unet_lora(dict(unet_keys), alphas and dict(alphas), unet, adapter_name=name)
                if text_keys:
                    # transformers' load report would list every other adapter's weights as missing here
                    with _quiet(logging.getLogger("transformers.integrations.peft")):
                        StableDiffusionLoraLoaderMixin.load_lora_into_text_encoder(
                            text_keys, alphas, self.text_encoder, prefix="text_encoder", adapter_name=name
                        )
        except (ValueError, KeyError, RuntimeError) as e:
            self._remove(name)
            raise InputError(f"loras: {path} does not fit this model's layers ({e})") from e
        if text_keys:
            self.in_text.add(name)
        log.info("loaded LoRA %s as %s", path, name)
        return name

    def _remove(self, name: str) -> None:
        """What a load that failed half-way injected under `name`, deleted."""
        for unet in self.unets:
            if name in (getattr(unet, "peft_config", None) or {}):
                unet.delete_adapters(name)
        if name in (getattr(self.text_encoder, "peft_config", None) or {}):
            from diffusers.utils.peft_utils import delete_adapter_layers

            delete_adapter_layers(self.text_encoder, name)


def _injected(unet: UNet2DConditionModel) -> bool:
    return bool(getattr(unet, "peft_config", None))


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """`logger` says nothing below an error for the duration."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
