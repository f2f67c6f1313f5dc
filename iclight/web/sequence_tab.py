"""The web app's Sequence tab: a clip (or a product's views) relit with one light, against a
background photo or a background video, with the frames done, the pace and the time left shown
while it runs."""

from __future__ import annotations

import shutil
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import gradio as gr

from ..core import constants as C
from ..core.hooks import Hooks
from ..core.validation import InputError
from ..imaging import video
from ..imaging.images import IMAGE_SUFFIXES
from ..jobs.job import JobFailed
from ..jobs.manifest import make_job, safe_name
from ..jobs.run import relight_one
from ..store.outputs import OutputFolders
from .controls import (
    PHOTO_MIN_WIDTH,
    control,
    for_the_model,
    light_choice,
    model_choice,
    path_of,
    photo,
    prompt_box,
    whole,
)


class SequenceTab:
    """The tab's handler (a plain method, testable without a browser) and its layout."""

    def __init__(self, relighter, outputs: OutputFolders, model: Executor) -> None:
        self.relighter, self.outputs, self.model = relighter, outputs, model  # model: the app's one model thread

    def relight_sequence(
        self, clip: Any, views: Any, background: Any, background_video: Any, values: dict[str, Any], progress=None
    ) -> tuple[Any, list[str], list[str]]:
        """A clip (or several images) relit with one light against a photo or a video: (the video,
        the frames, every file). `values`: relight and sequence options by name; `progress`: told
        the frames done of all."""
        views = [path_of(f) for f in (views or [])]
        source = path_of(clip) or (views[0] if len(views) == 1 and video.is_video(views[0]) else None)
        if source is None and not views:
            raise gr.Error("frames: upload a clip, or several images", title="Missing input")
        settings = values | {"output_format": "png"}
        if values.get("model") == C.FC:  # (the background's drop zones are hidden for fc)
            background = background_video = None
        hooks = Hooks(step_progress=False, frames_done=_reporter(progress))
        with self.outputs.folder() as folder:
            source = source or _frames_folder(views, folder)
            entry = {"id": safe_name(Path(source).stem)[:100], "sequence": source}
            entry |= {"background": path_of(background_video) or path_of(background)}
            entry["consistency"] = settings.pop("consistency")
            try:
                job = make_job(entry, settings, Path.cwd(), "web app")
                record = self.model.submit(relight_one, self.relighter, job, folder, hooks).result()
            except (InputError, JobFailed) as e:
                raise gr.Error(str(e), title="Cannot relight") from None
        outputs = record["outputs"]
        relit = next((p for p in outputs if video.is_video(p)), None)
        return relit, [p for p in outputs if p.endswith(".png")], outputs

    def build(self) -> None:
        named: dict[str, Any] = {}
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=PHOTO_MIN_WIDTH):
                named["model"] = model_choice(list(self.relighter.unets), "seq-model")
                with gr.Row():
                    clip = gr.Video(
                        label="Clip", sources=["upload"], height=220, min_width=PHOTO_MIN_WIDTH, elem_id="seq-input"
                    )
                    with gr.Tabs(elem_id="seq-background-tabs") as backgrounds:
                        with gr.Tab("Photo", id="seq-bg-photo"):
                            background = photo("Background photo", "seq-background")
                        with gr.Tab("Video", id="seq-bg-video"):
                            background_video = gr.Video(
                                label="Background video (frame k under frame k)", sources=["upload"], height=220,
                                elem_id="seq-background-video",
                            )  # fmt: skip
                named["prompt"] = prompt_box("seq-prompt", "e.g. soft window light")
                with gr.Row():
                    named["light_source"] = light_choice("seq-light")
                    named["consistency"] = control("consistency", elem_id="consistency", info=None)
                with gr.Row():
                    named["seed"] = gr.Number(value=12345, label="Seed", precision=0, elem_id="seq-seed", min_width=100)
                    run = gr.Button("Relight the clip", variant="primary", elem_id="seq-relight", min_width=100)
                with gr.Accordion("Size, steps, and a product's views", open=False, elem_id="seq-advanced"):
                    with gr.Row():
                        for name in ("width", "height", "steps", "highres_scale"):
                            named[name] = control(name, elem_id="seq-" + name.split("_")[0], info=None)
                    named["background_fit"] = control("background_fit", info=None)
                    views = gr.File(
                        label="Or several images (a product's views, in name order)", file_count="multiple",
                        elem_id="seq-views",
                    )  # fmt: skip
            with gr.Column(scale=6, min_width=PHOTO_MIN_WIDTH):
                relit = gr.Video(label="Relit clip", elem_id="seq-video", interactive=False, autoplay=True, loop=True)
                strip = gr.Gallery(label="Frames", columns=6, height=160, elem_id="seq-strip")
                files_out = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="seq-downloads")

        def on_model(model: str):
            shown, light, _ = for_the_model(model)
            return shown, light

        named["model"].change(on_model, [named["model"]], [backgrounds, named["light_source"]])

        def relight_sequence(data: dict, progress=gr.Progress()):  # noqa: B008 - Gradio's progress tracker
            values = {name: data[c] for name, c in named.items()}
            values["seed"] = None if values["seed"] in (None, "") else whole(values["seed"])
            return self.relight_sequence(
                data[clip], data[views], data[background], data[background_video], values, progress
            )

        run.click(
            relight_sequence, {clip, views, background, background_video, *named.values()}, [relit, strip, files_out],
            concurrency_id="model", concurrency_limit=1, preprocess=False,
        )  # fmt: skip


def _reporter(progress):
    """Frames done of all, as Gradio's progress bar shows them (with the pace and the time left)."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress((done, total), desc="relighting", unit="frames")

    return report


def _frames_folder(paths: list[str], folder: Path) -> str:
    """Uploaded images copied, in name order, into a folder of frames."""
    frames = folder / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(paths, key=lambda p: Path(p).name)):
        if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            raise gr.Error(f"frames: {Path(path).name} is not an image; upload a clip, or several images")
        shutil.copyfile(path, frames / f"{i:05d}{Path(path).suffix.lower()}")
    return str(frames)
