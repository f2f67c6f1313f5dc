"""`iclight ui`: a local web app (Gradio) for relighting, over one `Relighter`.

Uploads go through the package's own loaders, so any image Pillow reads works and a bad file
gets the API's message. The page's controls are named by the options they set; a relight is
made at the same door as a manifest line's (`jobs.manifest.make_job`) and written as the
command line writes it (recipe embedded) into bounded output folders (`store.outputs`).
"""

from __future__ import annotations

import os

# Before Gradio is imported: it reads these at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..core import constants as C
from ..core import options as O
from ..core.hooks import NO_HOOKS, Hooks
from ..core.light import BACKGROUND_SOURCES, FIELDS, from_fields
from ..core.spec import HDRI_SETTINGS, relight_spec
from ..core.validation import InputError
from ..imaging.images import load_image, resize_and_center_crop
from ..jobs.job import JobFailed
from ..jobs.manifest import make_job, safe_name
from ..jobs.run import relight_one
from ..pipeline.prepare import condition_of
from ..store.outputs import OutputFolders
from . import controls as ui_controls
from .controls import (
    LIGHT_PAD,
    PHOTO_MIN_WIDTH,
    for_the_model,
    light_choice,
    light_fields,
    model_choice,
    model_fields,
    model_settings,
    path_of,
    photo,
    prompt_box,
    whole,
)
from .sequence_tab import SequenceTab

GRADIO_VERSION = "6.31.0"
QUICK_PROMPTS = (
    "sunshine from window",
    "soft studio light",
    "neon light, city",
    "golden hour, warm sunset light",
    "cool moonlight from the left",
    "light and shadow, dramatic",
)
MAX_UPLOAD = "50mb"
# The options a light preview takes: the light's (a designed light, a map, a panorama), its source, the
# size and the model (whose light it is).
LIGHT_OPTIONS = {o.name for o in O.RELIGHT if o.group in ("light", "hdri")} | {"light_source", "width", "height"}
LIGHT_OPTIONS |= {"model"}
NO_SUBJECT = "no subject yet"  # a light preview's door takes one; nothing reads it
# A theme with the system's fonts: the default one would fetch fonts from Google.
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]


class RelightApp:
    """The page's event handlers (plain methods, testable without a browser) and its layout.

    Relights and sequences run on one thread of the app's own, whichever of Gradio's threads
    handles the event: torch.compile's CUDA graphs (`ICLIGHT_COMPILE=graphs`) are kept per thread,
    and a thread per relight would record them all again each time. The previews (a matte, a
    light) run where Gradio calls them: the relighter's lock keeps the matte apart from a run, and
    the light's preview uses no model."""

    def __init__(self, relighter, outputs: OutputFolders | None = None) -> None:
        self.relighter = relighter
        self.outputs = outputs or OutputFolders.from_env()
        self.model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iclight-model")

    def preview_subject(self, subject: Any, mask: Any) -> tuple[Any, Any]:
        """The matte and the subject on grey, as soon as a subject (or a mask) is uploaded."""
        subject, mask = path_of(subject), path_of(mask)
        if not subject:
            return None, None
        try:
            matte, on_grey = self.relighter.matte(subject, mask)
        except InputError as e:
            raise gr.Error(str(e), title="Cannot use this file") from None
        return (matte * 255).round().astype(np.uint8), on_grey

    def preview_background(self, background: Any) -> Any:
        background = path_of(background)
        if not background:
            return None
        try:
            return load_image(background, "background_image")
        except InputError as e:
            raise gr.Error(str(e), title="Cannot use this file") from None

    def preview_light(self, background: Any, values: dict[str, Any]) -> Any:
        """The condition image the model will see for the page's light settings (`values`, by
        name), before any relight: a panorama's view with its light, or the light designed. They
        go through a relight's door (`relight_spec`), with no subject yet (it is read only when
        a relight runs)."""
        panorama, light_map = path_of(values.get("hdri")), path_of(values.get("light_map"))
        background = None if panorama else path_of(background)  # a panorama is the background
        options = {k: v for k, v in settings_of(values).items() if k in LIGHT_OPTIONS}
        options |= {"light_map": light_map, "hdri": panorama}
        try:
            unlit = not (background or light_map or panorama or from_fields(light_of(options)))
            if unlit and values["light_source"] in (*BACKGROUND_SOURCES, C.NO_LIGHT):
                return None  # nothing to show before a background or a light
            spec = relight_spec(NO_SUBJECT, background, "preview", **options)
            bg = load_image(background, "background_image") if background else None
            lit = load_image(light_map, "light_map") if light_map else None
            return condition_of(spec, bg, lit, self.relighter.panoramas)[0]
        except InputError as e:
            raise gr.Error(str(e), title="Cannot use this light") from None

    def relight(
        self,
        subject: Any,
        background: Any,
        mask: Any,
        seed: int | None,
        values: dict[str, Any],
        hooks: Hooks = NO_HOOKS,
    ) -> tuple[list[str], list[str], int]:
        """Relight as `Relighter.relight` does with the page's `values` (by option name, the light
        pad's and the model controls' as they are shown); returns (gallery, downloads, seed used)."""
        subject, background, mask = path_of(subject), path_of(background), path_of(mask)
        background = None if values.get("model") == C.FC else background  # (its drop zone is hidden for fc)
        if not subject:
            raise gr.Error("subject_image: required, but no value was given", title="Missing input")
        entry = {"id": safe_name(Path(subject).stem)[:100], "subject": subject, "background": background}
        entry |= {name: path_of(values.get(name)) for name in O.RELIGHT_FILES} | {"mask": mask}
        try:
            job = make_job(entry, settings_of(values) | {"seed": seed}, Path.cwd(), "web app")
            with self.outputs.folder() as folder:
                record = self.model.submit(relight_one, self.relighter, job, folder, hooks).result()
        except (InputError, JobFailed) as e:
            raise gr.Error(str(e), title="Cannot relight") from None
        return record["outputs"], record["outputs"], record["seed"]

    def relight_live(self, subject: Any, background: Any, mask: Any, seed: int | None, shown: list, values: dict):
        """`relight` for the page: the image forming every few steps while it runs (previews of the
        latents, `models/previews.py`), then the result against the subject, and the visit's history."""
        frames: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["value"] = self.relight(subject, background, mask, seed, values, Hooks(previews=frames.put))
            except BaseException as e:  # handed to the page below
                outcome["error"] = e
            finally:
                frames.put(None)

        threading.Thread(target=work, daemon=True).start()  # it waits while the model thread relights
        skip = gr.skip()
        while (preview := frames.get()) is not None:
            yield _enlarged(preview.image), preview.label, skip, skip, skip, skip, skip
        if "error" in outcome:
            raise outcome["error"]
        outputs, _, used = outcome["value"]
        images = [p for p in outputs if not p.endswith(".json")]
        shown = [*shown, *((p, f"seed {used}") for p in images)]
        downloads = [*outputs, *(f for f, _ in shown if f not in outputs)]  # this relight's first
        before = framed(path_of(subject), images[0])
        yield images[0], f"Done: seed {used}", (before, images[0]), used, shown, downloads, shown

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="IC-Light relighting", analytics_enabled=False, delete_cache=(1800, 3600)) as page:
            gr.Markdown("**IC-Light relighting**: a subject, a background, a prompt. Runs on this machine.")
            with gr.Tab("Relight", id="relight-tab"):
                self._relight_tab()
            with gr.Tab("Sequence", id="sequence-tab"):
                SequenceTab(self.relighter, self.outputs, self.model).build()
        return page

    def _relight_tab(self) -> None:
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=PHOTO_MIN_WIDTH):
                model = model_choice(list(self.relighter.unets), "model")
                with gr.Row():
                    subject = photo("Subject photo", "subject")
                    background = photo("Background photo", "background")
                named: dict[str, Any] = {"prompt": prompt_box("prompt", "e.g. sunshine from window")}
                with gr.Row(elem_id="quick-prompts"):
                    for text in QUICK_PROMPTS[:4]:
                        gr.Button(text, size="sm", min_width=60).click(lambda t=text: t, None, named["prompt"])
                named["light_source"] = light_choice("light")
                with gr.Row():
                    random_seed = gr.Checkbox(value=True, label="Random seed", elem_id="random-seed", min_width=100)
                    seed = gr.Number(value=12345, label="Seed", precision=0, elem_id="seed", min_width=100)
                    run = gr.Button("Relight", variant="primary", elem_id="relight", min_width=100)
                with gr.Accordion("Mask, matte and what the model sees", open=False, elem_id="matte-panel"):
                    mask = gr.File(label="Mask (optional; white = subject)", elem_id="mask")
                    with gr.Row():
                        matte = gr.Image(label="Matte", interactive=False, elem_id="matte", height=200)
                        on_grey = gr.Image(label="What the model sees", interactive=False, height=200)
                with gr.Accordion(
                    "Light pad: design the light, or light from an HDRI", open=False, elem_id="light-pad"
                ):
                    pad, light_map, design, preview = ui_controls.light_pad()
                    panorama = ui_controls.panorama()
                with gr.Accordion("Models: LoRAs, sampler, light as the start", open=False, elem_id="models"):
                    named |= ui_controls.models()
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    named |= ui_controls.advanced(self.relighter.matting)
            with gr.Column(scale=6, min_width=PHOTO_MIN_WIDTH):
                live = gr.Image(label="Relighting", interactive=False, elem_id="live", height=260, format="png")
                stage = gr.Markdown("", elem_id="stage")
                slider = gr.ImageSlider(label="Before and after", type="filepath", elem_id="slider", height=300)
                with gr.Row():
                    seed_used = gr.Number(label="Seed used", interactive=False, precision=0, elem_id="seed-used")
                    reuse = gr.Button("Reuse this seed", elem_id="reuse-seed")
                history = gr.Gallery(label="This visit", columns=4, height=180, elem_id="history")
                downloads = gr.File(
                    label="Download (recipe embedded)", file_count="multiple", interactive=False, elem_id="downloads"
                )
        shown = gr.State([])
        named |= pad | panorama | {"design_light": design, "light_map": light_map, "model": model}
        model.change(for_the_model, [model], [background, named["light_source"], named["lowres_denoise"]])
        own = {"subject": subject, "background": background, "mask": mask, "random_seed": random_seed, "seed": seed}
        own["shown"] = shown
        raw = dict(preprocess=False)  # uploads as the files themselves: 16-bit, CMYK, alpha and EXIF kept

        def relight_live(data: dict):
            given = {name: data[c] for name, c in own.items()}
            values = {name: data[c] for name, c in named.items()}
            chosen = None if given["random_seed"] or given["seed"] is None else whole(given["seed"])
            yield from self.relight_live(
                given["subject"], given["background"], given["mask"], chosen, given["shown"], values
            )

        seen = ("light_source", "width", "height", "design_light", "light_map", "model")
        light_seen = {name: named[name] for name in seen}
        light_seen |= pad | panorama

        def preview_light(data: dict):
            return self.preview_light(data[background], {name: data[c] for name, c in light_seen.items()})

        for control in (background, *light_seen.values()):
            control.change(
                preview_light, {background, *light_seen.values()}, [preview], concurrency_id="preview", **raw
            )
        for trigger in (subject.change, mask.change):
            trigger(self.preview_subject, [subject, mask], [matte, on_grey], concurrency_id="preview", **raw)
        run.click(
            relight_live, {*own.values(), *named.values()},
            [live, stage, slider, seed_used, history, downloads, shown],
            concurrency_id="model", concurrency_limit=1, **raw,
        )  # fmt: skip
        reuse.click(lambda used: (used, False), [seed_used], [seed, random_seed])


def framed(subject: str, result: str) -> str:
    """The subject as the result frames it (scaled to cover the result's size, then its centre, as
    the model saw it), beside the result: the before of the before-and-after slider."""
    with Image.open(result) as im:
        size = im.size
    path = Path(result).with_name(Path(result).stem + "-before.png")
    Image.fromarray(resize_and_center_crop(load_image(subject, "subject_image"), *size)).save(path)
    return str(path)


def settings_of(values: dict[str, Any]) -> dict[str, Any]:
    """The relight options the page's values stand for: the light pad's as light settings (none
    with a panorama, which makes the light), the panorama's settings where there is one, the model
    controls' as LoRAs, sampler and light start; every other one by its own name."""
    pad = {name: values[name] for name in LIGHT_PAD if name in values}
    model_names = ("loras", "lora_scale", "sampler", "light_start", "lowres_denoise")
    own = (*LIGHT_PAD, *model_names, *HDRI_SETTINGS, *O.RELIGHT_FILES, "design_light")
    found = {k: v for k, v in values.items() if k not in own} | model_fields(values) | model_settings(values)
    if path_of(values.get("hdri")):
        return found | {name: float(values[name]) for name in HDRI_SETTINGS if name in values}
    return found | light_fields(values.get("design_light", False), pad)


def light_of(options: dict[str, Any]) -> dict[str, Any]:
    """A designed light's flat settings among `options`."""
    return {name: options.get(name) for name in FIELDS}


def _enlarged(preview: np.ndarray) -> np.ndarray:
    """A preview (1/8 of the image: one pixel per latent) at the image's size."""
    h, w = preview.shape[:2]
    return np.asarray(Image.fromarray(preview).resize((w * 8, h * 8), Image.BILINEAR))


def launch(relighter, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> tuple[gr.Blocks, str]:
    """Serve the page: one relight at a time on the model, the rest queued (their place shown)."""
    page = RelightApp(relighter).build()
    page.queue(default_concurrency_limit=1)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    _, url, _ = page.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=MAX_UPLOAD,
        prevent_thread_lock=not block,
        quiet=not block,
        theme=theme,
        footer_links=["settings"],
    )
    return page, url
