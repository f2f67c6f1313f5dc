"""The web app's Sequence tab: a video (or several images) relit with one light."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import gradio as gr

from ..core.validation import InputError
from ..imaging import video
from ..imaging.images import IMAGE_SUFFIXES
from ..jobs.job import JobFailed
from ..jobs.manifest import make_job, safe_name
from ..jobs.run import relight_one
from ..store.outputs import OutputFolders
from .controls import PHOTO_MIN_WIDTH, control, light_choice, path_of, photo, prompt_box, whole


class SequenceTab:
    """The tab's handler (a plain method, testable without a browser) and its layout."""

    def __init__(self, relighter, outputs: OutputFolders) -> None:
        self.relighter, self.outputs = relighter, outputs

    def relight_sequence(self, files: Any, background: Any, values: dict[str, Any]) -> tuple[Any, list[str], list[str]]:
        """A video (or several images) relit with one light: (the video, the frames, every file).
        `values`: relight and sequence options by name."""
        paths = [path_of(f) for f in (files or [])]
        if not paths:
            raise gr.Error("frames: upload a video or several images", title="Missing input")
        settings = values | {"output_format": "png"}
        with self.outputs.folder() as folder:
            source = paths[0] if len(paths) == 1 and video.is_video(paths[0]) else _frames_folder(paths, folder)
            entry = {"id": safe_name(Path(source).stem)[:100], "sequence": source, "background": path_of(background)}
            entry["consistency"] = settings.pop("consistency")
            try:
                job = make_job(entry, settings, Path.cwd(), "web app")
                record = relight_one(self.relighter, job, folder)
            except (InputError, JobFailed) as e:
                raise gr.Error(str(e), title="Cannot relight") from None
        outputs = record["outputs"]
        clip = next((p for p in outputs if video.is_video(p)), None)
        return clip, [p for p in outputs if p.endswith(".png")], outputs

    def build(self) -> None:
        named: dict[str, Any] = {}
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=PHOTO_MIN_WIDTH):
                files = gr.File(
                    label="A video, or several images (in name order)", file_count="multiple", elem_id="seq-input"
                )
                background = photo("Background photo", "seq-background")
                named["prompt"] = prompt_box("seq-prompt", "e.g. soft window light")
                named["light_source"] = light_choice("seq-light")
                with gr.Row():
                    named["consistency"] = control("consistency", elem_id="consistency", info=None)
                    named["seed"] = gr.Number(value=12345, label="Seed", precision=0, elem_id="seq-seed")
                with gr.Accordion("Size and steps", open=False, elem_id="seq-advanced"):
                    for name in ("width", "height", "steps", "highres_scale"):
                        named[name] = control(name, elem_id="seq-" + name.split("_")[0], info=None)
                run = gr.Button("Relight the sequence", variant="primary", elem_id="seq-relight")
            with gr.Column(scale=6, min_width=PHOTO_MIN_WIDTH):
                clip = gr.Video(label="Relit video", elem_id="seq-video", interactive=False, autoplay=True, loop=True)
                strip = gr.Gallery(label="Frames", columns=6, height=160, elem_id="seq-strip")
                files_out = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="seq-downloads")

        def relight_sequence(data: dict):
            values = {name: data[c] for name, c in named.items()}
            values["seed"] = None if values["seed"] in (None, "") else whole(values["seed"])
            return self.relight_sequence(data[files], data[background], values)

        run.click(
            relight_sequence, {files, background, *named.values()}, [clip, strip, files_out],
            concurrency_id="model", concurrency_limit=1, preprocess=False,
        )  # fmt: skip


def _frames_folder(paths: list[str], folder: Path) -> str:
    """Uploaded images copied, in name order, into a folder of frames."""
    frames = folder / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(paths, key=lambda p: Path(p).name)):
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            raise gr.Error(f"frames: {Path(path).name} is not an image; upload one video or several images")
        shutil.copyfile(path, frames / f"{i:05d}{Path(path).suffix.lower()}")
    return str(frames)
