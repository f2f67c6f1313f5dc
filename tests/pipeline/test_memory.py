"""Memory and caches: what can be checked on the CPU."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from iclight.pipeline import GPUOutOfMemoryError, Relighter

FAST = dict(width=256, height=256, steps=2, highres_scale=1.0, seed=4)


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture
def masked(subject_array: np.ndarray) -> dict:
    return dict(mask=np.where(subject_array[..., 0] > 100, 255, 0).astype(np.uint8))


def test_resident_set_stays_flat_over_twenty_predictions(relighter: Relighter, subject_array, background_array, masked):
    relighter.relight(subject_array, background_array, "sun", **FAST, **masked)
    gc.collect()
    first = _rss_bytes()
    for i in range(19):
        relighter.relight(subject_array, background_array, f"sun {i % 3}", **FAST, **masked)
    gc.collect()
    assert _rss_bytes() <= first * 1.05


def test_prompt_cache_does_not_change_pixels(relighter: Relighter, subject_array, background_array, masked):
    cached = relighter.relight(subject_array, background_array, "cache check", **FAST, **masked)
    relighter.prompts._cache.clear()
    fresh = relighter.relight(subject_array, background_array, "cache check", **FAST, **masked)
    assert np.array_equal(np.asarray(cached.images[0]), np.asarray(fresh.images[0]))


def test_prompt_cache_is_bounded_and_keyed_on_how_the_text_encoder_computes(relighter: Relighter):
    prompts = relighter.prompts
    for i in range(prompts.cache_size + 5):
        prompts(f"prompt {i}", "")
    assert len(prompts._cache) == prompts.cache_size
    plain = prompts("keyed", "")
    assert prompts("keyed", "") is plain
    assert prompts("keyed", "", clip_skip=2) is not plain  # another layer of the text encoder
    assert prompts("keyed", "", variant=(("lora0", 1.0),)) is not plain  # a LoRA on the text encoder


def test_out_of_gpu_memory_fails_that_prediction_only(
    relighter: Relighter, subject_array, background_array, masked, monkeypatch
):
    from iclight.pipeline.passes import Diffusion

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    monkeypatch.setattr(Diffusion, "run", oom)
    with pytest.raises(GPUOutOfMemoryError, match="out of GPU memory .* 3 image"):
        relighter.relight(subject_array, background_array, "sun", number_of_images=3, **FAST, **masked)
    monkeypatch.undo()
    out = relighter.relight(subject_array, background_array, "sun", **FAST, **masked)
    assert len(out.images) == 1


def test_vae_takes_the_batch_at_once_unless_it_is_big():
    from iclight.core.spec import Settings
    from iclight.pipeline.passes import vae_slicing, vae_tiling

    defaults = Settings(512, 640, 25, 7.0, 1.5, 0.5)  # high-res 768x960
    assert defaults.highres_size == (768, 960)
    # Up to 5 images the VAE takes the batch at once, as the hosted code does (faster); then one at a time.
    assert not vae_slicing(defaults, 1) and not vae_slicing(defaults, 5)
    assert vae_slicing(defaults, 6) and vae_slicing(defaults, 12)
    assert not vae_tiling(defaults)
    huge = Settings(1024, 1024, 25, 7.0, 3.0, 0.5)  # high-res 3072x3072
    assert vae_slicing(huge, 1) and vae_tiling(huge)


def test_vae_modes_stay_off_on_the_cpu(relighter: Relighter, subject_array, background_array, masked):
    relighter.relight(subject_array, background_array, "sun", number_of_images=2, **FAST, **masked)
    assert not relighter.vae.use_slicing and not relighter.vae.use_tiling
