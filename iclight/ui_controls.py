"""The web app's collapsed panels: every other hosted input, the light pad, and the model choices.
Each builder makes its controls inside the current Gradio layout and returns them by name."""

from __future__ import annotations

from typing import Any

import gradio as gr

from . import constants as C
from . import lighting, samplers

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
# The model choices (docs/models.md): LoRA files and one scale for them, the sampler, and the
# light as the first pass's start (0: off, the hosted behaviour).
MODEL_CONTROLS: dict[str, Any] = {"loras": None, "lora_scale": 1.0, "sampler": samplers.HOSTED, "light_start": 0.0}


def advanced(spec: dict[str, C.InputSpec]) -> dict[str, gr.components.Component]:
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


def light_pad() -> tuple[dict[str, gr.components.Component], Any, Any, Any]:
    """The light designer's controls (LIGHT_CONTROLS' order), a light map, the switch, the preview."""
    d = LIGHT_CONTROLS
    design = gr.Checkbox(label="Design the light (instead of the preset above)", value=False, elem_id="design")
    c: dict[str, gr.components.Component] = {}
    with gr.Row():
        c["light_angle"] = gr.Slider(
            0, 360, value=d["light_angle"], step=1, label="From (degrees)",
            info="0 right, 90 top, 180 left, 270 bottom", elem_id="light-angle",
        )  # fmt: skip
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
        0, 1, value=d["light_mix"], step=0.05, label="Light mixed into the background",
        info="1: the light alone; below 1 the background shows through", elem_id="mix",
    )  # fmt: skip
    light_map = gr.File(label="Light map (optional: an image used as the light)", elem_id="light-map")
    preview = gr.Image(
        label="What the model sees as light", interactive=False, height=220, format="png", elem_id="preview"
    )
    return c, light_map, design, preview


def models() -> dict[str, gr.components.Component]:
    """LoRAs, the sampler and the light as the start (MODEL_CONTROLS' order)."""
    c: dict[str, gr.components.Component] = {}
    c["loras"] = gr.File(
        label="LoRAs (.safetensors, kohya/A1111 or diffusers layout)", file_count="multiple",
        file_types=[".safetensors"], elem_id="loras",
    )  # fmt: skip
    c["lora_scale"] = gr.Slider(-2, 2, value=1.0, step=0.05, label="LoRA scale", elem_id="lora-scale")
    with gr.Row():
        c["sampler"] = gr.Dropdown(
            list(samplers.SAMPLERS), value=samplers.HOSTED, label="Sampler", elem_id="sampler",
            info=f"{samplers.HOSTED} is the hosted model's",
        )  # fmt: skip
        c["light_start"] = gr.Slider(
            0, 1, value=0.0, step=0.05, label="Start from the light", elem_id="light-start",
            info="0: off (from noise); lower keeps more of the light",
        )  # fmt: skip
    return c


def _slider(spec: C.InputSpec, step: float, elem_id: str) -> gr.Slider:
    label = spec.name.replace("_", " ").capitalize()
    return gr.Slider(
        spec.ge, spec.le, value=spec.default, step=step, label=label, info=spec.description, elem_id=elem_id
    )
