"""The wide parity cases (`make parity-wide`), each the stored case with one thing changed.

    python -m benchmarks.parity.cases tests/data/parity/cases.json > cases.json

fbc: every light source, batches, long prompts, an empty appended prompt, high-res scales and
denoise, compute_normal, an extreme aspect ratio, cfg, one step, a seed above 2**63. fc
(`fc_cases`, from the stored fc case): every light source, batches with and without a light,
high-res scales 1 to 2, low-res denoise, long prompts, cfg 1, two steps.
"""

from __future__ import annotations

import json
import sys

from iclight.core import constants as C

LONG = " ".join(["a cinematic portrait in warm golden sunlight through tall windows"] * 12)  # about 130 tokens


def cases(base: dict) -> list[dict]:
    found = [dict(base, name=f"light {light}", light_source=light, seed=7) for light in C.LIGHT_SOURCES]
    found += [
        dict(base, name="3 images, Left Light", number_of_images=3, light_source=C.LEFT_LIGHT, seed=99),
        dict(base, name="2 images", number_of_images=2, seed=5),
        dict(base, name="long prompts", prompt=LONG, negative_prompt=" ".join(["blurry deformed"] * 60), seed=3),
        # An empty negative prompt crashes the hosted code, so only the appended one is empty here.
        dict(base, name="no appended prompt", appended_prompt="", negative_prompt="bad", seed=11),
        *(dict(base, name=f"highres {s}", highres_scale=s, seed=21) for s in (1.0, 1.3, 2.0, 3.0)),
        dict(base, name="denoise 0.9", highres_denoise=0.9, seed=4),
        dict(base, name="denoise 0.1, 10 steps", highres_denoise=0.1, steps=10, seed=4),
        dict(base, name="compute_normal", compute_normal=True, seed=8),
        dict(base, name="1024x256", width=1024, height=256, light_source=C.RIGHT_LIGHT, seed=2),
        dict(base, name="cfg 7.5", cfg=7.5, steps=6, seed=1),
        dict(base, name="cfg 1", cfg=1.0, seed=1),
        dict(base, name="1 step", steps=1, seed=0),
        dict(base, name="seed above 2**63", seed=2**63 + 5),
    ]
    return found


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        json.dump(cases(json.load(f)[0]), sys.stdout, indent=1)


def fc_cases(base: dict) -> list[dict]:
    return [
        *(dict(base, name=f"fc light {light}", light_source=light, seed=7) for light in C.FC_LIGHT_SOURCES),
        dict(base, name="fc 3 images, Left Light", number_of_images=3, light_source=C.LEFT_LIGHT, seed=99),
        dict(base, name="fc 2 images, no light", number_of_images=2, light_source=C.NO_LIGHT, seed=5),
        *(dict(base, name=f"fc highres {s}", highres_scale=s, seed=21) for s in (1.0, 1.3, 2.0)),
        *(dict(base, name=f"fc lowres {d}", lowres_denoise=d, seed=4) for d in (0.5, 1.0)),
        dict(base, name="fc long prompts", prompt=LONG, negative_prompt=" ".join(["blurry deformed"] * 60), seed=3),
        dict(base, name="fc 512x256, Top Light", width=512, height=256, light_source=C.TOP_LIGHT, seed=2),
        dict(base, name="fc cfg 1", cfg=1.0, seed=1),
        # One step crashes the hosted code (its first pass runs int(1 * 0.9) = 0 steps); ours runs one.
        dict(base, name="fc 2 steps", steps=2, seed=0),
    ]
