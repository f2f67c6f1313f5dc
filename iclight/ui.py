"""`iclight ui`: a local web app (Gradio) for relighting, over one `Relighter`.

Uploads go through the package's own loaders, so any image Pillow reads works and a bad
file gets the API's message. Results are written as the command line writes them (recipe
embedded) into bounded output folders (`outputs.OutputFolders`) and offered for download.
"""

from __future__ import annotations

import os

# Before Gradio is imported: it reads these at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import queue
import shutil
import threading
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from . import constants as C
from . import lighting, matting, ui_controls, video
from .imaging import IMAGE_SUFFIXES, ImageInputError, load_image
from .jobs import JobFailed, defaults, make_job, relight_one, safe_name
from .outputs import OutputFolders
from .previews import Previews
from .ui_controls import LIGHT_CONTROLS, MODEL_CONTROLS
from .validation import InputError

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
# A theme with the system's fonts: the default one would fetch fonts from Google.
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO_FONTS = ["ui-monospace", "monospace"]
INPUT_ORDER = tuple(s.name for s in C.INPUTS if s.type is not object and s.name != "seed")
# The page's inputs after the seed, in the order `RelightApp.relight` takes them.
UI_EXTRAS: dict[str, Any] = {
    "detail_transfer": 0.0,
    "keep_background": False,
    "keep_colors": 0.0,
    "matting": None,
    "light_map": None,
    "design_light": False,
    **LIGHT_CONTROLS,
    **MODEL_CONTROLS,
}
# The first screen's layout: the two photos side by side down to this width each, one column below.
PHOTO_MIN_WIDTH = 260


def light_fields(design_light: bool, controls: dict[str, Any]) -> dict[str, Any]:
    """The light settings (`lighting.FIELDS`) that the light pad's controls stand for."""
    fields = dict.fromkeys(lighting.FIELDS)
    controls = {k: v for k, v in controls.items() if k in LIGHT_CONTROLS}
    mix = controls.get("light_mix", 1.0)
    fields["light_mix"] = None if mix is None or float(mix) >= 1.0 else float(mix)
    if not design_light:
        return fields
    fields |= {k: v for k, v in controls.items() if k != "light_mix" and not k.startswith("fill_")}
    if float(controls.get("fill_strength") or 0) > 0:
        fields |= {k: v for k, v in controls.items() if k.startswith("fill_")}
    return fields


class RelightApp:
    """The page's event handlers (plain methods, testable without a browser) and its layout."""

    def __init__(self, relighter, outputs: OutputFolders | None = None) -> None:
        self.relighter = relighter
        self.outputs = outputs or OutputFolders.from_env()

    def preview_subject(self, subject: Any, mask: Any) -> tuple[Any, Any]:
        """The matte and the subject on grey, as soon as a subject (or a mask) is uploaded."""
        subject, mask = _path(subject), _path(mask)
        if not subject:
            return None, None
        try:
            matte, on_grey = self.relighter.matte(subject, mask)
        except InputError as e:
            raise gr.Error(str(e), title="Cannot use this file") from None
        return (matte * 255).round().astype(np.uint8), on_grey

    def preview_background(self, background: Any) -> Any:
        background = _path(background)
        if not background:
            return None
        try:
            return load_image(background, "background_image")
        except ImageInputError as e:
            raise gr.Error(str(e), title="Cannot use this file") from None

    def preview_light(
        self, background: str | None, light_source: str, width: float, height: float, *values: Any
    ) -> Any:
        """The condition image the model will see for these light settings, before any relight."""
        pad = dict(zip(("light_map", "design_light", *LIGHT_CONTROLS), values, strict=True))
        background, pad["light_map"] = _path(background), _path(pad["light_map"])
        try:
            light, mix = lighting.from_fields(light_fields(pad["design_light"], pad))
            bg = load_image(background, "background_image") if background else None
            lit = load_image(pad["light_map"], "light_map") if pad["light_map"] else None
            if bg is None and light is None and lit is None and light_source in lighting.BACKGROUND_SOURCES:
                return None
            return lighting.condition_image(light_source, bg, int(width), int(height), light, lit, mix)
        except (InputError, ValueError) as e:
            raise gr.Error(str(e), title="Cannot use this light") from None

    def relight(
        self,
        subject: str | None,
        background: str | None,
        mask: str | None,
        random_seed: bool,
        seed: float | None,
        *values: Any,
    ) -> tuple[list[str], list[str], int | None]:
        """Relight as `Relighter.relight` does; returns (gallery, downloads, seed used)."""
        subject, background, mask = _path(subject), _path(background), _path(mask)
        given = dict(zip((*INPUT_ORDER, *UI_EXTRAS), values, strict=True))
        pad = {k: given.pop(k) for k in LIGHT_CONTROLS}
        light_map, design = _path(given.pop("light_map")), given.pop("design_light")
        chosen = model_fields({k: given.pop(k) for k in MODEL_CONTROLS})
        settings = given | light_fields(design, pad) | chosen
        settings["seed"] = None if random_seed or seed is None else _whole(seed)
        if not subject:
            raise gr.Error("subject_image: required, but no value was given", title="Missing input")
        entry = {"id": safe_name(Path(subject).stem)[:100], "subject": subject, "background": background, "mask": mask}
        entry["light_map"] = light_map
        try:
            job = make_job(entry, defaults(settings), Path.cwd(), "web app", None, False)
            with self.outputs.folder() as folder:
                record = relight_one(self.relighter, job, folder)
        except (InputError, JobFailed) as e:
            raise gr.Error(str(e), title="Cannot relight") from None
        return record["outputs"], record["outputs"], record["seed"]

    def relight_live(
        self, subject: Any, background: Any, mask: Any, random_seed: bool, seed: Any, shown: list, *values
    ):
        """`relight` for the page: the image forming every few steps while it runs (previews of the
        latents, `previews.py`), then the result against the subject, and the visit's history."""
        frames: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            self.relighter.previews = Previews(frames.put)
            try:
                outcome["value"] = self.relight(subject, background, mask, random_seed, seed, *values)
            except BaseException as e:  # handed to the page below
                outcome["error"] = e
            finally:
                self.relighter.previews = None
                frames.put(None)

        threading.Thread(target=work, daemon=True).start()
        skip = gr.skip()
        while (preview := frames.get()) is not None:
            yield _enlarged(preview.image), preview.label, skip, skip, skip, skip, skip
        if "error" in outcome:
            raise outcome["error"]
        outputs, _, used = outcome["value"]
        images = [p for p in outputs if not p.endswith(".json")]
        shown = [*shown, *((p, f"seed {used}") for p in images)]
        downloads = [*outputs, *(f for f, _ in shown if f not in outputs)]  # this relight's first
        yield images[0], f"Done: seed {used}", (_path(subject), images[0]), used, shown, downloads, shown

    def relight_sequence(
        self, files: Any, background: Any, prompt: str, light: str, consistency: float, seed: Any, *sizes: Any
    ) -> tuple[Any, list[str], list[str]]:
        """A video (or several images) relit with one light: (the video, the frames, every file)."""
        paths = [_path(f) for f in (files or [])]
        if not paths:
            raise gr.Error("frames: upload a video or several images", title="Missing input")
        settings = dict(zip(("width", "height", "steps", "highres_scale"), sizes, strict=True))
        settings |= {"prompt": prompt, "light_source": light, "seed": None if seed in (None, "") else _whole(seed)}
        with self.outputs.folder() as folder:
            source = paths[0] if len(paths) == 1 and video.is_video(paths[0]) else _frames_folder(paths, folder)
            entry = {"id": safe_name(Path(source).stem)[:100], "sequence": source, "background": _path(background)}
            entry["consistency"] = consistency
            try:
                job = make_job(entry, defaults(settings | {"output_format": "png"}), Path.cwd(), "web app", None, False)
                record = relight_one(self.relighter, job, folder)
            except (InputError, JobFailed) as e:
                raise gr.Error(str(e), title="Cannot relight") from None
        outputs = record["outputs"]
        clip = next((p for p in outputs if video.is_video(p)), None)
        return clip, [p for p in outputs if p.endswith(".png")], outputs

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="IC-Light relighting", analytics_enabled=False, delete_cache=(1800, 3600)) as page:
            gr.Markdown("**IC-Light relighting**: a subject, a background, a prompt. Runs on this machine.")
            with gr.Tab("Relight", id="relight-tab"):
                self._relight_tab()
            with gr.Tab("Sequence", id="sequence-tab"):
                self._sequence_tab()
        return page

    def _relight_tab(self) -> None:
        spec = C.INPUT_SPECS
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=PHOTO_MIN_WIDTH):
                with gr.Row():
                    subject = _photo("Subject photo", "subject")
                    background = _photo("Background photo", "background")
                prompt = gr.Textbox(label="Prompt", elem_id="prompt", placeholder="e.g. sunshine from window", lines=1)
                with gr.Row(elem_id="quick-prompts"):
                    for text in QUICK_PROMPTS[:4]:
                        gr.Button(text, size="sm", min_width=60).click(lambda t=text: t, None, prompt)
                light = gr.Dropdown(
                    list(C.LIGHT_SOURCES), value=C.default("light_source"), label="Light", elem_id="light"
                )
                with gr.Row():
                    random_seed = gr.Checkbox(value=True, label="Random seed", elem_id="random-seed", min_width=100)
                    seed = gr.Number(value=12345, label="Seed", precision=0, elem_id="seed", min_width=100)
                    run = gr.Button("Relight", variant="primary", elem_id="relight", min_width=100)
                with gr.Accordion("Mask, matte and what the model sees", open=False, elem_id="matte-panel"):
                    mask = gr.File(label="Mask (optional; white = subject)", elem_id="mask")
                    with gr.Row():
                        matte = gr.Image(label="Matte", interactive=False, elem_id="matte", height=200)
                        on_grey = gr.Image(label="What the model sees", interactive=False, height=200)
                with gr.Accordion("Light pad: design the light", open=False, elem_id="light-pad"):
                    pad, light_map, design, preview = ui_controls.light_pad()
                with gr.Accordion("Models: LoRAs, sampler, light as the start", open=False, elem_id="models"):
                    models = ui_controls.models()
                with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                    advanced = ui_controls.advanced(spec)
                    advanced["matting"] = gr.Radio(
                        list(matting.CHOICES), value=self.relighter.matting,
                        label="Matting (for a subject without mask or alpha)",
                        info="rmbg-1.4: the hosted model's (non-commercial weights); birefnet, birefnet-lite: MIT "
                        "licence; another than the loaded one loads on first use", elem_id="matting",
                    )  # fmt: skip
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
        values = [
            prompt if name == "prompt" else light if name == "light_source" else advanced[name] for name in INPUT_ORDER
        ] + [advanced[name] for name in ("detail_transfer", "keep_background", "keep_colors", "matting")]
        controls = [light_map, design, *(pad[name] for name in LIGHT_CONTROLS)]
        values += controls + [models[name] for name in MODEL_CONTROLS]  # UI_EXTRAS' order
        seen = [background, light, advanced["width"], advanced["height"], *controls]
        raw = dict(preprocess=False)  # uploads as the files themselves: 16-bit, CMYK, alpha, EXIF kept
        for control in seen:
            control.change(self.preview_light, seen, [preview], concurrency_id="preview", **raw)
        for trigger in (subject.change, mask.change):
            trigger(self.preview_subject, [subject, mask], [matte, on_grey], concurrency_id="preview", **raw)
        run.click(
            self.relight_live,
            [subject, background, mask, random_seed, seed, shown, *values],
            [live, stage, slider, seed_used, history, downloads, shown],
            concurrency_id="model", concurrency_limit=1, **raw,
        )  # fmt: skip
        reuse.click(lambda used: (used, False), [seed_used], [seed, random_seed])

    def _sequence_tab(self) -> None:
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=PHOTO_MIN_WIDTH):
                files = gr.File(
                    label="A video, or several images (in name order)", file_count="multiple", elem_id="seq-input"
                )
                background = _photo("Background photo", "seq-background")
                prompt = gr.Textbox(label="Prompt", elem_id="seq-prompt", placeholder="e.g. soft window light")
                light = gr.Dropdown(
                    list(C.LIGHT_SOURCES), value=C.default("light_source"), label="Light", elem_id="seq-light"
                )
                with gr.Row():
                    consistency = gr.Slider(0, 1, value=0.5, step=0.05, label="Consistency", elem_id="consistency")
                    seed = gr.Number(value=12345, label="Seed", precision=0, elem_id="seq-seed")
                with gr.Accordion("Size and steps", open=False, elem_id="seq-advanced"):
                    size = dict(minimum=C.SIZES[0], maximum=C.SIZES[-1], step=C.SIZES[1] - C.SIZES[0])
                    sizes = [
                        gr.Slider(label="Width", value=C.default("width"), elem_id="seq-width", **size),
                        gr.Slider(label="Height", value=C.default("height"), elem_id="seq-height", **size),
                        gr.Slider(1, 100, value=C.default("steps"), step=1, label="Steps", elem_id="seq-steps"),
                        gr.Slider(1, 3, value=C.default("highres_scale"), step=0.05, label="High-res scale",
                                  elem_id="seq-highres"),
                    ]  # fmt: skip
                run = gr.Button("Relight the sequence", variant="primary", elem_id="seq-relight")
            with gr.Column(scale=6, min_width=PHOTO_MIN_WIDTH):
                clip = gr.Video(label="Relit video", elem_id="seq-video", interactive=False, autoplay=True, loop=True)
                strip = gr.Gallery(label="Frames", columns=6, height=160, elem_id="seq-strip")
                files_out = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="seq-downloads")
        run.click(
            self.relight_sequence,
            [files, background, prompt, light, consistency, seed, *sizes],
            [clip, strip, files_out],
            concurrency_id="model", concurrency_limit=1, preprocess=False,
        )  # fmt: skip


def model_fields(controls: dict[str, Any]) -> dict[str, Any]:
    """The job settings the model controls stand for: LoRA paths at the scale, the sampler, light_start."""
    files = [_path(f) for f in (controls.get("loras") or [])]
    scale = controls.get("lora_scale", 1.0)
    start = controls.get("light_start") or 0.0
    loras = [f"{f}:{scale}" for f in files if f] or None
    return {"loras": loras, "sampler": controls.get("sampler"), "light_start": float(start) if start > 0 else None}


def _enlarged(preview: np.ndarray) -> np.ndarray:
    """A preview (1/8 of the image: one pixel per latent) at the image's size."""
    h, w = preview.shape[:2]
    return np.asarray(Image.fromarray(preview).resize((w * 8, h * 8), Image.BILINEAR))


def _photo(label: str, elem_id: str) -> gr.Image:
    """An image drop zone (upload, drag, paste) that shows the picture; events take the file itself."""
    return gr.Image(
        label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"], height=220,
        min_width=PHOTO_MIN_WIDTH, elem_id=elem_id,
    )  # fmt: skip


def _path(value: Any) -> str | None:
    """An upload's file: Gradio hands events with preprocessing off the uploaded file's data (a dict),
    the handlers' callers a path."""
    if value in (None, ""):
        return None
    if isinstance(value, dict):
        return value.get("path")
    return str(value)


def _frames_folder(paths: list[str], folder: Path) -> str:
    """Uploaded images copied, in name order, into a folder of frames."""
    frames = folder / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(paths, key=lambda p: Path(p).name)):
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            raise gr.Error(f"frames: {Path(path).name} is not an image; upload one video or several images")
        shutil.copyfile(path, frames / f"{i:05d}{Path(path).suffix.lower()}")
    return str(frames)


def _whole(value: float) -> int:
    return int(value) if float(value).is_integer() else value  # validation names a fractional seed


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
