"""A relight up to its diffusion, and after it: the images read, the matte, the subject on grey,
the condition image and the prompt embeddings; then the extras that finish each image."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..core import constants as C
from ..core.spec import ImageLike, RelightSpec
from ..imaging import hdri
from ..imaging.colors import keep_colors
from ..imaging.compositing import keep_background, on_grey, transfer_detail
from ..imaging.images import fit_mask, load_image, load_image_and_alpha
from ..imaging.lighting import condition_image
from ..matting.mattes import NONE, Mattes
from ..models.prompts import PromptEncoder
from ..models.timing import StageTimer

log = logging.getLogger("iclight")


@dataclass
class Prepared:
    """A relight up to its diffusion: what the passes take and what finishing needs."""

    spec: RelightSpec
    stage: StageTimer
    image: np.ndarray
    bg_upload: np.ndarray | None
    matte: np.ndarray  # HxWx1
    fg: np.ndarray
    bg: np.ndarray | None  # fc: its light (None: none); None with compute_normal: its lights are made per pass
    embeds: tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Caches:
    """What a relighter keeps between runs for preparing one: mattes, prompt embeddings, panoramas."""

    mattes: Mattes
    prompts: PromptEncoder
    panoramas: hdri.Panoramas


def prepare_relight(spec: RelightSpec, caches: Caches, variant: tuple, device: torch.device, live: bool) -> Prepared:
    """Everything `spec` needs before its diffusion. `variant`: what changes the text encoder
    beyond the texts (its LoRAs). `live`: stage times are logged as they end (else kept)."""
    if live:
        log.info("Using seed: %d", spec.seed)
    stage = StageTimer(device, quiet=not live)
    image, alpha = load_image_and_alpha(spec.subject, "subject_image")  # every image first: a bad file fails at once
    bg_upload = None if spec.background is None else load_image(spec.background, "background_image")
    light_map = None if spec.light_map is None else load_image(spec.light_map, "light_map")
    with stage("background removal"):
        matte = matte_of(image, alpha, spec.mask, caches.mattes, spec.matting, whole=spec.model == C.FC)
        fg = on_grey(image, matte, C.NORMAL_SIGMA if spec.compute_normal else C.RELIGHT_SIGMA)
    with stage("text"):
        embeds = caches.prompts(*spec.texts, spec.clip_skip, variant)
    bg = None
    if not spec.compute_normal:  # (compute_normal makes its four lights per pass)
        with stage("panorama" if spec.hdri is not None else "condition"):
            bg, kept = condition_of(spec, bg_upload, light_map, caches.panoramas)
        bg_upload = kept if spec.hdri is not None else bg_upload
    return Prepared(spec, stage, image, bg_upload, matte, fg, bg, embeds)


def condition_of(
    s: RelightSpec, background: np.ndarray | None, light_map: np.ndarray | None, panoramas: hdri.Panoramas
) -> tuple[np.ndarray, np.ndarray | None]:
    """The image the model sees beside the subject, at the low-res size: the background's, a
    designed light's or a light map's (`imaging.lighting.condition_image`), or a panorama's view
    with its light; and, from a panorama, at the output's size the view the relit subject is put
    over where `keep_background` asks. The web app's light preview shows the same image."""
    if s.hdri is None:
        found = condition_image(s.light_source, background, s.width, s.height, s.light, light_map, s.light_mix, s.model)
        return found, None
    pano, light = panoramas.get(s.hdri)
    turn = (s.hdri_heading, s.hdri_pitch, s.hdri_fov)
    cond, _, _, _ = hdri.condition(pano, light, s.width, s.height, *turn, s.hdri_exposure, s.hdri_light)
    kept = hdri.view(pano, *s.settings.highres_size, *turn, s.hdri_exposure) if s.keep_background else None
    return cond, kept


def matte_of(
    image: np.ndarray,
    alpha: np.ndarray | None,
    mask: ImageLike | None,
    mattes: Mattes,
    choice: str | None,
    whole: bool = False,
) -> np.ndarray:
    """A supplied mask, else the subject's own alpha, else the matting model's estimate (HxWx1);
    with `whole` (the fc model), matting `none` takes the whole frame as the subject."""
    if mask is not None:
        m = load_image(mask, "mask")[..., 0].astype(np.float32) / 255.0
        return fit_mask(m, image.shape[1], image.shape[0])[..., None]
    if alpha is not None:
        return alpha[..., None]
    if whole and (choice or mattes.default) == NONE:
        return np.ones((*image.shape[:2], 1), np.float32)
    return mattes.estimate(image, choice)


def finish(spec: RelightSpec, result: np.ndarray, p: Prepared) -> np.ndarray:
    """Detail transfer, then the subject's colours, then the background's own pixels."""
    matte = p.matte[..., 0]
    if spec.detail_transfer > 0:
        result = transfer_detail(result, p.image, matte, spec.detail_transfer)
    if spec.keep_colors > 0:
        result = keep_colors(result, p.image, matte, spec.keep_colors)
    if spec.keep_background:
        result = keep_background(result, p.bg_upload, matte)
    return result
