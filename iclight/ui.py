"""`iclight ui`: a local web app (Gradio) for relighting, over one `Relighter`.

Uploads go through the package's own loaders, so any image Pillow reads works and a bad
file gets the API's message. Results are written as the command line writes them (recipe
embedded) into bounded output folders (`outputs.OutputFolders`) and offered for download.
"""

from __future__ import annotations

import os

# Before Gradio is imported: it reads these at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from . import constants as C
from . import lighting, matting
from .imaging import ImageInputError, load_image
from .jobs import JobFailed, defaults, make_job, relight_one, safe_name
from .outputs import OutputFolders
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
# The light pad's controls, after "design a light", with their defaults. A second light adds
# nothing at strength 0; a mix of 1 is the light alone.
LIGHT_CONTROLS: dict[str, Any] = {
    "light_angle": 180.0,
    "light_color": "white",
    "light_bright": float(C.LIGHT_BRIGHT),
    "light_dark": float(C.LIGHT_DARK),
    "light_shape": "linear",
    "light_x": 0.5,
    "light_y": 0.5,
    "light_radius": 0.5,
    "fill_angle": 0.0,
    "fill_color": "white",
    "fill_strength": 0.0,
    "light_mix": 1.0,
}
# The page's inputs after the seed, in the order `RelightApp.relight` takes them.
UI_EXTRAS: dict[str, Any] = {
    "detail_transfer": 0.0,
    "keep_background": False,
    "keep_colors": 0.0,
    "matting": None,
    "light_map": None,
    "design_light": False,
    **LIGHT_CONTROLS,
}


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

    def preview_subject(self, subject: str | None, mask: str | None) -> tuple[Any, Any]:
        """The matte and the subject on grey, as soon as a subject (or a mask) is uploaded."""
        if not subject:
            return None, None
        try:
            matte, on_grey = self.relighter.matte(subject, mask)
        except (InputError, ImageInputError) as e:
            raise gr.Error(str(e), title="Cannot use this file") from None
        return (matte * 255).round().astype(np.uint8), on_grey

    def preview_background(self, background: str | None) -> Any:
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
        try:
            light, mix = lighting.from_fields(light_fields(pad["design_light"], pad))
            bg = load_image(background, "background_image") if background else None
            lit = load_image(pad["light_map"], "light_map") if pad["light_map"] else None
            if bg is None and light is None and lit is None and light_source in lighting.BACKGROUND_SOURCES:
                return None
            return lighting.condition_image(light_source, bg, int(width), int(height), light, lit, mix)
        except (InputError, ImageInputError, ValueError) as e:
            raise gr.Error(str(e), title="Cannot use this light") from None

    def relight(
        self,
        subject: str | None,
        background: str | None,
        mask: str | None,
        random_seed: bool,
        seed: float | None,
        *values: Any,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's API
    ) -> tuple[list[str], list[str], int | None]:
        """Relight as `Relighter.relight` does; returns (gallery, downloads, seed used)."""
        given = dict(zip((*INPUT_ORDER, *UI_EXTRAS), values, strict=True))
        pad = {k: given.pop(k) for k in LIGHT_CONTROLS}
        light_map, design = given.pop("light_map"), given.pop("design_light")
        settings = given | light_fields(design, pad)
        settings["seed"] = None if random_seed or seed is None else _whole(seed)
        if not subject:
            raise gr.Error("subject_image: required, but no value was given", title="Missing input")
        entry = {"id": safe_name(Path(subject).stem)[:100], "subject": subject, "background": background, "mask": mask}
        entry["light_map"] = light_map
        try:
            job = make_job(entry, defaults(settings), Path.cwd(), "web app", None, False)
            with self.outputs.folder() as folder:
                record = relight_one(self.relighter, job, folder)
        except (InputError, ImageInputError, JobFailed) as e:
            raise gr.Error(str(e), title="Cannot relight") from None
        return record["outputs"], record["outputs"], record["seed"]

    def build(self) -> gr.Blocks:
        spec = C.INPUT_SPECS
        with gr.Blocks(title="IC-Light relighting", analytics_enabled=False, delete_cache=(1800, 3600)) as page:
            gr.Markdown(
                "## IC-Light relighting\nUpload a subject and a background (or pick a light), describe the "
                "light, and relight. Runs locally; nothing leaves this machine."
            )
            with gr.Row():
                with gr.Column():
                    subject = gr.File(label="Subject photo", elem_id="subject")
                    with gr.Row():
                        matte = gr.Image(label="Matte", interactive=False, elem_id="matte", height=220)
                        on_grey = gr.Image(label="What the model sees", interactive=False, height=220)
                    mask = gr.File(label="Mask (optional; white = subject)", elem_id="mask")
                    background = gr.File(label="Background photo", elem_id="background")
                    background_view = gr.Image(label="Background", interactive=False, height=220)
                    light = gr.Radio(
                        list(C.LIGHT_SOURCES), value=C.default("light_source"), label="Light", elem_id="light"
                    )
                    with gr.Accordion("Light pad: design the light", open=False, elem_id="light-pad"):
                        pad, light_map, design, preview = self._light_pad()
                    prompt = gr.Textbox(label="Prompt", elem_id="prompt", placeholder="e.g. sunshine from window")
                    gr.Examples([[p] for p in QUICK_PROMPTS], inputs=[prompt], label="Quick prompts")
                    with gr.Row():
                        random_seed = gr.Checkbox(value=True, label="Random seed", elem_id="random-seed")
                        seed = gr.Number(value=12345, label="Seed", precision=0, elem_id="seed")
                    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                        advanced = self._advanced(spec)
                        advanced["matting"] = gr.Radio(
                            list(matting.CHOICES),
                            value=self.relighter.matting,
                            label="Matting (for a subject without mask or alpha)",
                            info="rmbg-1.4: the hosted model's (non-commercial weights); birefnet, birefnet-lite: MIT "
                            "licence; another than the loaded one loads on first use",
                            elem_id="matting",
                        )
                    run = gr.Button("Relight", variant="primary", elem_id="relight")
                with gr.Column():
                    gallery = gr.Gallery(label="Results", columns=2, elem_id="gallery", height=520)
                    with gr.Row():
                        seed_used = gr.Number(label="Seed used", interactive=False, precision=0, elem_id="seed-used")
                        reuse = gr.Button("Reuse this seed", elem_id="reuse-seed")
                    downloads = gr.File(
                        label="Download (recipe embedded)",
                        file_count="multiple",
                        interactive=False,
                        elem_id="downloads",
                    )
            values = [
                prompt if name == "prompt" else light if name == "light_source" else advanced[name]
                for name in INPUT_ORDER
            ] + [advanced[name] for name in ("detail_transfer", "keep_background", "keep_colors", "matting")]
            controls = [light_map, design, *(pad[name] for name in LIGHT_CONTROLS)]  # UI_EXTRAS' order
            values += controls
            seen = [background, light, advanced["width"], advanced["height"], *controls]
            for control in seen:
                control.change(self.preview_light, seen, [preview], concurrency_id="preview")
            for trigger in (subject.change, mask.change):
                trigger(self.preview_subject, [subject, mask], [matte, on_grey], concurrency_id="preview")
            background.change(self.preview_background, [background], [background_view], concurrency_id="preview")
            run.click(
                self.relight,
                [subject, background, mask, random_seed, seed, *values],
                [gallery, downloads, seed_used],
                concurrency_id="model",
                concurrency_limit=1,
            )
            reuse.click(lambda used: (used, False), [seed_used], [seed, random_seed])
        return page

    @staticmethod
    def _advanced(spec: dict[str, C.InputSpec]) -> dict[str, gr.components.Component]:
        """Every other hosted input, with the hosted defaults, bounds and choices; then the extras."""
        size = dict(minimum=C.SIZES[0], maximum=C.SIZES[-1], step=C.SIZES[1] - C.SIZES[0])
        c: dict[str, gr.components.Component] = {}
        with gr.Row():
            c["width"] = gr.Slider(label="Width", value=C.default("width"), elem_id="width", **size)
            c["height"] = gr.Slider(label="Height", value=C.default("height"), elem_id="height", **size)
        with gr.Row():
            c["steps"] = _slider(spec["steps"], 1, "steps")
            c["cfg"] = _slider(spec["cfg"], 0.1, "cfg")
            c["number_of_images"] = _slider(spec["number_of_images"], 1, "number-of-images")
        with gr.Row():
            c["highres_scale"] = _slider(spec["highres_scale"], 0.05, "highres-scale")
            c["highres_denoise"] = _slider(spec["highres_denoise"], 0.01, "highres-denoise")
        c["appended_prompt"] = gr.Textbox(label="Appended prompt", value=C.default("appended_prompt"))
        c["negative_prompt"] = gr.Textbox(label="Negative prompt", value=C.default("negative_prompt"))
        c["compute_normal"] = gr.Checkbox(label="Compute normal map (nine images)", value=C.default("compute_normal"))
        with gr.Row():
            c["output_format"] = gr.Radio(
                list(C.OUTPUT_FORMATS), value=C.default("output_format"), label="Format", elem_id="format"
            )
            c["output_quality"] = _slider(spec["output_quality"], 1, "quality")
        with gr.Row():
            c["detail_transfer"] = gr.Slider(0, 1, value=0.0, step=0.05, label="Detail transfer", elem_id="detail")
            c["keep_colors"] = gr.Slider(
                0, 1, value=0.0, step=0.05, label="Keep the subject's colours", elem_id="keep-colors"
            )
            c["keep_background"] = gr.Checkbox(label="Keep the background's own pixels", value=False)
        return c

    @staticmethod
    def _light_pad() -> tuple[dict[str, gr.components.Component], Any, Any, Any]:
        """The light designer's controls (LIGHT_CONTROLS' order), a light map, the switch, the preview."""
        d = LIGHT_CONTROLS
        design = gr.Checkbox(label="Design the light (instead of the preset above)", value=False, elem_id="design")
        c: dict[str, gr.components.Component] = {}
        with gr.Row():
            c["light_angle"] = gr.Slider(
                0,
                360,
                value=d["light_angle"],
                step=1,
                label="From (degrees)",
                info="0 right, 90 top, 180 left, 270 bottom",
                elem_id="light-angle",
            )
            c["light_color"] = gr.Textbox(
                value=d["light_color"], label="Colour", info="#rrggbb or a CSS name", elem_id="light-color"
            )
        with gr.Row():
            c["light_bright"] = gr.Slider(0, 255, value=d["light_bright"], step=1, label="Bright level")
            c["light_dark"] = gr.Slider(0, 255, value=d["light_dark"], step=1, label="Dark level")
        c["light_shape"] = gr.Radio(list(lighting.SHAPES), value=d["light_shape"], label="Shape", elem_id="shape")
        with gr.Row():
            c["light_x"] = gr.Slider(0, 1, value=d["light_x"], step=0.01, label="Spot x")
            c["light_y"] = gr.Slider(0, 1, value=d["light_y"], step=0.01, label="Spot y")
            c["light_radius"] = gr.Slider(0.05, 2, value=d["light_radius"], step=0.05, label="Spot radius")
        with gr.Row():
            c["fill_angle"] = gr.Slider(0, 360, value=d["fill_angle"], step=1, label="Second light from")
            c["fill_color"] = gr.Textbox(value=d["fill_color"], label="Second light's colour")
            c["fill_strength"] = gr.Slider(0, 1, value=d["fill_strength"], step=0.05, label="Second light (0: none)")
        c["light_mix"] = gr.Slider(
            0,
            1,
            value=d["light_mix"],
            step=0.05,
            label="Light mixed into the background",
            info="1: the light alone; below 1 the background shows through",
            elem_id="mix",
        )
        light_map = gr.File(label="Light map (optional: an image used as the light)", elem_id="light-map")
        preview = gr.Image(
            label="What the model sees as light", interactive=False, height=220, format="png", elem_id="preview"
        )
        return c, light_map, design, preview


def _slider(spec: C.InputSpec, step: float, elem_id: str) -> gr.Slider:
    label = spec.name.replace("_", " ").capitalize()
    return gr.Slider(
        spec.ge, spec.le, value=spec.default, step=step, label=label, info=spec.description, elem_id=elem_id
    )


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
