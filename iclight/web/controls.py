"""The web app's controls, named by the options they set (`core/options.py`): a control of an
option takes its label, help, default, range and choices from the option's entry. Each builder
makes its controls inside the current Gradio layout and returns them by option name."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..core import constants as C
from ..core import light as L
from ..core import options as O

# The light pad's controls, after "design a light", with their defaults: a `Light`'s own. A second
# light adds nothing at strength 0; a mix of 1 is the light alone.
_LIGHT = L.Light()
LIGHT_PAD: dict[str, Any] = {
    "light_angle": L.DEFAULT_ANGLE,
    "light_color": _LIGHT.color,
    "light_bright": float(_LIGHT.bright),
    "light_dark": float(_LIGHT.dark),
    "light_shape": _LIGHT.shape,
    "light_x": _LIGHT.x,
    "light_y": _LIGHT.y,
    "light_radius": _LIGHT.radius,
    "fill_angle": 0.0,
    "fill_color": "white",
    "fill_strength": 0.0,
    "light_mix": 1.0,
}
# The first screen's layout: the two photos side by side down to this width each, one column below.
PHOTO_MIN_WIDTH = 260
# A slider's step where the option's own range does not say it (whole numbers step by 1).
STEPS = {"cfg": 0.1, "highres_scale": 0.05, "highres_denoise": 0.01}
# The page's own names for some controls (where they differ from the option's).
ELEM_IDS = {"output_format": "format", "output_quality": "quality", "detail_transfer": "detail"}
# The options of the Advanced panel, in its rows.
ADVANCED = (
    ("width", "height"),
    ("steps", "cfg", "number_of_images"),
    ("highres_scale", "highres_denoise"),
    ("appended_prompt",),
    ("negative_prompt",),
    ("compute_normal", "clip_skip"),
    ("output_format", "output_quality"),
    ("detail_transfer", "keep_colors", "keep_background"),
    ("lowres_denoise", "highres_pass"),
)
# The model choice's labels: what each model takes.
MODEL_LABELS = {C.FBC: "fbc: to a background photo", C.FC: "fc: from the prompt and a light"}
FC_START = C.FC_INPUT_SPECS["lowres_denoise"].default  # the fc model's low-res denoise, its slider's start


def control(name: str, elem_id: str | None = None, **overrides: Any) -> gr.components.Component:
    """The control of one option: a checkbox, a choice, a slider or a text box, by its entry."""
    option = O.BY_NAME[name]
    kw: dict[str, Any] = {
        "label": name.replace("_", " ").capitalize(),
        "info": option.help,
        "value": option.default,
        "elem_id": elem_id or ELEM_IDS.get(name, name.replace("_", "-")),
    }
    kw |= overrides
    if option.kind is bool:
        return gr.Checkbox(**kw)
    if option.choices is not None and option.kind is int and len(option.choices) > 3:  # evenly spaced sizes
        low, high = option.choices[0], option.choices[-1]
        return gr.Slider(low, high, step=option.choices[1] - low, **kw)
    if option.choices is not None:
        return gr.Radio(list(option.choices), **kw)
    if option.low is not None and option.high is not None:
        step = kw.pop("step", STEPS.get(name, 1 if option.kind is int else 0.05))
        return gr.Slider(option.low, option.high, step=step, **kw)
    return gr.Textbox(**kw)


def advanced(matting: str) -> dict[str, gr.components.Component]:
    """Every other hosted input and the extras, with their defaults, ranges and choices;
    `matting`: the loaded matting model, the default choice."""
    found: dict[str, gr.components.Component] = {}
    fc_only = {"lowres_denoise": {"value": FC_START, "visible": False, "label": "Low-res denoise (fc)"}}
    for row in ADVANCED:
        with gr.Row():
            for name in row:
                found[name] = control(
                    name, info=None if len(row) > 1 else O.BY_NAME[name].help, **fc_only.get(name, {})
                )
    found["matting"] = control(
        "matting", value=matting, label="Matting (for a subject without mask or alpha)",
        info="rmbg-1.4: the hosted model's (non-commercial weights); birefnet, birefnet-lite: MIT licence; "
        "another than the loaded one loads on first use",
    )  # fmt: skip
    return found


def light_pad() -> tuple[dict[str, gr.components.Component], Any, Any, Any]:
    """The light designer's controls (LIGHT_PAD's), a light map, the switch, the preview."""
    d = LIGHT_PAD
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
    c["light_shape"] = gr.Radio(list(L.SHAPES), value=d["light_shape"], label="Shape", elem_id="shape")
    with gr.Row():
        c["light_x"] = gr.Slider(0, 1, value=d["light_x"], step=0.01, label="Spot x")
        c["light_y"] = gr.Slider(0, 1, value=d["light_y"], step=0.01, label="Spot y")
        c["light_radius"] = gr.Slider(0.05, 2, value=d["light_radius"], step=0.05, label="Spot radius")
    with gr.Row():
        c["fill_angle"] = gr.Slider(0, 360, value=d["fill_angle"], step=1, label="Second light from")
        c["fill_color"] = gr.Textbox(value=d["fill_color"], label="Second light's colour")
        c["fill_strength"] = gr.Slider(0, 1, value=d["fill_strength"], step=0.05, label="Second light (0: none)")
    c["light_mix"] = control(
        "light_mix", value=d["light_mix"], label="Light mixed into the background",
        info="1: the light alone; below 1 the background shows through", elem_id="mix",
    )  # fmt: skip
    light_map = gr.File(label="Light map (optional: an image used as the light)", elem_id="light-map")
    preview = gr.Image(
        label="What the model sees as light", interactive=False, height=220, format="png", elem_id="preview"
    )
    return c, light_map, design, preview


def panorama() -> dict[str, gr.components.Component]:
    """An HDRI and how the camera looks into it (the `hdri` options); the preview above shows the
    view and the light as soon as one changes."""
    c: dict[str, gr.components.Component] = {}
    c["hdri"] = gr.File(
        label="HDRI: an equirectangular panorama (.hdr, .exr, or a 2:1 image) as background and light",
        file_types=[".hdr", ".exr", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"], elem_id="hdri",
    )  # fmt: skip
    with gr.Row():
        c["hdri_heading"] = control("hdri_heading", label="Heading", info="turning right from the centre")
        c["hdri_pitch"] = control("hdri_pitch", label="Pitch", info="looking up")
    with gr.Row():
        c["hdri_fov"] = control("hdri_fov", label="Field of view", info=None)
        c["hdri_exposure"] = control("hdri_exposure", label="Exposure (stops)", info=None, step=0.25)
        c["hdri_light"] = control("hdri_light", label="Light from outside the view", info=None)
    return c


def light_fields(design: bool, pad: dict[str, Any]) -> dict[str, Any]:
    """The light settings (`core/light.py`'s fields and `light_mix`) the light pad stands for."""
    found: dict[str, Any] = L.no_fields()
    mix = pad.get("light_mix", 1.0)
    found["light_mix"] = None if mix is None or float(mix) >= 1.0 else float(mix)
    if not design:
        return found
    found |= {k: v for k, v in pad.items() if k in L.FIELDS and not k.startswith("fill_")}
    if float(pad.get("fill_strength") or 0) > 0:
        found |= {k: v for k, v in pad.items() if k.startswith("fill_")}
    return found


def models() -> dict[str, gr.components.Component]:
    """LoRAs and one scale for them, the sampler, and the light as the first pass's start (0: off)."""
    c: dict[str, gr.components.Component] = {}
    c["loras"] = gr.File(
        label="LoRAs (.safetensors, kohya/A1111 or diffusers layout)", file_count="multiple",
        file_types=[".safetensors"], elem_id="loras",
    )  # fmt: skip
    c["lora_scale"] = gr.Slider(-2, 2, value=1.0, step=0.05, label="LoRA scale", elem_id="lora-scale")
    with gr.Row():
        c["sampler"] = gr.Dropdown(
            list(O.SAMPLERS), value=O.HOSTED_SAMPLER, label="Sampler", elem_id="sampler",
            info=f"{O.HOSTED_SAMPLER} is the hosted model's",
        )  # fmt: skip
        c["light_start"] = control(
            "light_start",
            value=0.0,
            label="Start from the light",
            info="0: off (from noise); lower keeps more of the light",
        )
    return c


def model_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The relight options the model controls stand for: LoRA files at the scale, the sampler,
    the light as the start (0: off)."""
    files = [path_of(f) for f in (values.get("loras") or [])]
    scale = values.get("lora_scale", 1.0)
    start = values.get("light_start") or 0.0
    loras = [f"{f}:{scale}" for f in files if f] or None
    return {"loras": loras, "sampler": values.get("sampler"), "light_start": float(start) if start > 0 else None}


def photo(label: str, elem_id: str) -> gr.Image:
    """An image drop zone (upload, drag, paste) that shows the picture; events take the file itself."""
    return gr.Image(
        label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"], height=220,
        min_width=PHOTO_MIN_WIDTH, elem_id=elem_id,
    )  # fmt: skip


def prompt_box(elem_id: str, placeholder: str) -> gr.Textbox:
    return gr.Textbox(label="Prompt", elem_id=elem_id, placeholder=placeholder, lines=1)


def light_choice(elem_id: str) -> gr.Dropdown:
    return gr.Dropdown(list(C.LIGHT_SOURCES), value=C.default("light_source"), label="Light", elem_id=elem_id)


def model_choice(served: list[str], elem_id: str) -> gr.Radio:
    """The IC-Light model, among those the relighter serves (a choice only where it serves both)."""
    choices = [(MODEL_LABELS[m], m) for m in served]
    return gr.Radio(choices, value=served[0], label="Model", interactive=len(served) > 1, elem_id=elem_id)


def for_the_model(model: str) -> tuple[Any, Any, Any]:
    """What the page shows for `model`: the background's drop zone (fbc only), its light sources
    with its own default, and the fc model's low-res denoise."""
    fc = model == C.FC
    sources, default = (C.FC_LIGHT_SOURCES, C.NO_LIGHT) if fc else (C.LIGHT_SOURCES, C.default("light_source"))
    light = gr.update(choices=list(sources), value=default)
    return gr.update(visible=not fc), light, gr.update(visible=fc)


def model_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The model's own options among the page's values: the fc model's low-res denoise, none for fbc."""
    fc = values.get("model") == C.FC
    return {"lowres_denoise": float(values.get("lowres_denoise") or FC_START) if fc else None}


def path_of(value: Any) -> str | None:
    """An upload's file: Gradio hands events with preprocessing off the uploaded file's data (a dict),
    the handlers' callers a path."""
    if value in (None, ""):
        return None
    if isinstance(value, dict):
        return value.get("path")
    return str(value)


def whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value  # the door names a fractional seed
