"""The single source of the input contract, limits and model constants.

`predict.py`, the command line, the Python API and the tests all read these, so the
hosted model's schema is written down exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

SIZES: tuple[int, ...] = tuple(range(256, 1025, 64))

BACKGROUND_IMAGE = "Use Background Image"
FLIPPED_BACKGROUND_IMAGE = "Use Flipped Background Image"
LEFT_LIGHT = "Left Light"
RIGHT_LIGHT = "Right Light"
TOP_LIGHT = "Top Light"
BOTTOM_LIGHT = "Bottom Light"
AMBIENT = "Ambient"
LIGHT_SOURCES: tuple[str, ...] = (
    BACKGROUND_IMAGE,
    FLIPPED_BACKGROUND_IMAGE,
    LEFT_LIGHT,
    RIGHT_LIGHT,
    TOP_LIGHT,
    BOTTOM_LIGHT,
    AMBIENT,
)
# compute_normal relights under these four, in this order.
NORMAL_LIGHTS: tuple[str, ...] = (LEFT_LIGHT, RIGHT_LIGHT, BOTTOM_LIGHT, TOP_LIGHT)

OUTPUT_FORMATS: tuple[str, ...] = ("webp", "jpg", "png")
# The matting models a relight may choose (iclight/matting/): the hosted model's, BiRefNet's two,
# or none (every subject brings a mask or an alpha channel).
MATTING_CHOICES: tuple[str, ...] = ("rmbg-1.4", "birefnet", "birefnet-lite", "none")
SEED_MAX = 2**64 - 1  # what torch.Generator.manual_seed accepts
SEED_MIN = -(2**63)

# A sequence's frames diffused together: at most what `number_of_images` allows in one request.
SEQUENCE_MAX_WINDOW = 12


@dataclass(frozen=True)
class InputSpec:
    """One input of the hosted model: what Cog declares and what we check."""

    name: str
    type: type
    description: str
    default: Any = None
    required: bool = False
    ge: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None

    def cog_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `cog.Input`."""
        kw: dict[str, Any] = {"description": self.description}
        if not self.required:
            kw["default"] = self.default
        for key in ("ge", "le"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        if self.choices is not None:
            kw["choices"] = list(self.choices)
        return kw


INPUTS: tuple[InputSpec, ...] = (
    InputSpec("subject_image", object, "The main foreground image to be relighted", required=True),
    InputSpec(
        "background_image",
        object,
        "The background image that will be used to relight the main foreground image",
        required=True,
    ),
    InputSpec("prompt", str, "A text description guiding the relighting and generation process", required=True),
    InputSpec(
        "appended_prompt",
        str,
        "Additional text to be appended to the main prompt, enhancing image quality",
        default="best quality",
    ),
    InputSpec(
        "negative_prompt",
        str,
        "A text description of attributes to avoid in the generated images",
        default="lowres, bad anatomy, bad hands, cropped, worst quality",
    ),
    InputSpec(
        "compute_normal",
        bool,
        "Whether to compute the normal maps (slower but provides additional output images)",
        default=False,
    ),
    InputSpec("width", int, "The width of the generated images in pixels", default=512, choices=SIZES),
    InputSpec("height", int, "The height of the generated images in pixels", default=640, choices=SIZES),
    InputSpec(
        "steps",
        int,
        "The number of diffusion steps to perform during generation (more steps generally improves image "
        "quality but increases processing time)",
        default=25,
        ge=1,
        le=100,
    ),
    InputSpec(
        "cfg",
        float,
        "Classifier-Free Guidance scale - higher values encourage adherence to prompt, lower values encourage "
        "more creative interpretation",
        default=2.0,
        ge=1,
        le=32,
    ),
    InputSpec(
        "highres_scale",
        float,
        "The multiplier for the final output resolution relative to the initial latent resolution",
        default=1.5,
        ge=1,
        le=3,
    ),
    InputSpec(
        "highres_denoise",
        float,
        "Controls the amount of denoising applied when refining the high resolution output (higher = more "
        "adherence to the upscaled latent, lower = more creative details added)",
        default=0.5,
        ge=0.1,
        le=1,
    ),
    InputSpec(
        "light_source",
        str,
        "The type and position of lighting to apply to the initial background latent",
        default=BACKGROUND_IMAGE,
        choices=LIGHT_SOURCES,
    ),
    InputSpec(
        "seed",
        int,
        "A fixed random seed for reproducible results (omit this parameter for a randomized seed)",
        default=None,
    ),
    InputSpec(
        "number_of_images",
        int,
        "The number of unique images to generate from the given input and settings",
        default=1,
        ge=1,
        le=12,
    ),
    InputSpec(
        "output_format",
        str,
        "The image file format of the generated output images",
        default="webp",
        choices=OUTPUT_FORMATS,
    ),
    InputSpec(
        "output_quality",
        int,
        "The image compression quality (for lossy formats like JPEG and WebP). 100 = best quality, 0 = lowest quality.",
        default=80,
        ge=0,
        le=100,
    ),
)
INPUT_SPECS: dict[str, InputSpec] = {spec.name: spec for spec in INPUTS}

# -- the sibling hosted model, IC-Light fc (`zsxkib/ic-light`): a subject, a prompt and a light ---------

FBC, FC = "fbc", "fc"
MODELS: tuple[str, ...] = (FBC, FC)  # background-conditioned (the hosted `ic-light-background`), text-conditioned
BOTH = "both"  # a process serving both models (ICLIGHT_MODEL)
MODEL_CHOICES: tuple[str, ...] = (*MODELS, BOTH)
SEED_BITS = {FBC: 32, FC: 16}  # a missing seed's draw: each hosted model's (fc's from 2 random bytes)
NO_LIGHT = "None"  # fc: no initial light, text to image from noise
FC_LIGHT_SOURCES: tuple[str, ...] = (NO_LIGHT, LEFT_LIGHT, RIGHT_LIGHT, TOP_LIGHT, BOTTOM_LIGHT)
_FC_OWN = (
    InputSpec(
        "lowres_denoise",
        float,
        "Controls the amount of denoising applied when generating the initial latent from the background image "
        "(higher = more adherence to the background, lower = more creative interpretation)",
        default=0.9,
        ge=0.1,
        le=1,
    ),
    replace(INPUT_SPECS["light_source"], default=NO_LIGHT, choices=FC_LIGHT_SOURCES),  # fbc's description
)
# The hosted fc model's inputs, in its order: fbc's but the background, compute_normal and the light
# sources, with lowres_denoise (the strength of the light as the first pass's start).
FC_ORDER = (
    "subject_image", "prompt", "appended_prompt", "negative_prompt", "width", "height", "steps", "cfg",
    "highres_scale", "highres_denoise", "lowres_denoise", "light_source", "seed", "number_of_images",
    "output_format", "output_quality",
)  # fmt: skip
FC_INPUT_SPECS: dict[str, InputSpec] = {s.name: s for s in INPUTS} | {s.name: s for s in _FC_OWN}
FC_INPUTS: tuple[InputSpec, ...] = tuple(FC_INPUT_SPECS[name] for name in FC_ORDER)


def default(name: str) -> Any:
    return INPUT_SPECS[name].default


def served(choice: str) -> tuple[str, ...]:
    """The models a choice of MODEL_CHOICES serves, the default one first."""
    return MODELS if choice == BOTH else (choice,)


# Model constants (IC-Light's published settings).
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "algorithm_type": "sde-dpmsolver++",
    "use_karras_sigmas": True,
    "steps_offset": 1,
}
CONDITION_CHANNELS = 8  # foreground latent (4) then background latent (4)
UNET_IN_CHANNELS = 4 + CONDITION_CHANNELS
# Each model's condition: fbc's foreground and background latents, fc's foreground latent alone.
MODEL_CONDITION_CHANNELS = {FBC: CONDITION_CHANNELS, FC: 4}
LATENT_FACTOR = 8
HIGHRES_MULTIPLE = 64

GREY = 127  # neutral fill of the subject-on-grey
AMBIENT_GREY = 64
FC_LIGHT_BRIGHT, FC_LIGHT_DARK = 255, 0  # the fc model's gradients, its first pass's start
LIGHT_BRIGHT = 224
LIGHT_DARK = 32
RELIGHT_SIGMA = 0.0
NORMAL_SIGMA = 16.0
RMBG_AREA = 256.0  # in units of 64x64 tiles: about one megapixel fed to the matting net

NORMAL_EPS = 1e-5
NORMAL_Z_POWER = 5.0
