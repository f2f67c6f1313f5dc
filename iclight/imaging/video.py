"""Video in and out with PyAV: the frames of a clip (a range and a stride, at the source's rate),
and the relit frames encoded at the same rate with the source's audio. MP4/H.264 where the
installed FFmpeg has an H.264 encoder, else WebM/VP9; written under a temporary name, renamed
once complete."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..core.validation import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif")
MAX_FRAMES = 600  # a sequence's frames after the range and the stride (20 s at 30 fps)
# (container suffix, video encoder, audio encoder), the first the installed FFmpeg has
FORMATS = ((".mp4", "libx264", "aac"), (".mp4", "h264", "aac"), (".webm", "libvpx-vp9", "libopus"))


@dataclass
class Clip:
    """Decoded frames and what is needed to write them back as a video."""

    frames: list[np.ndarray]
    rate: Fraction  # frames per second of the output (the source's, divided by the stride)
    source: Path | None = None
    start_s: float = 0.0
    end_s: float | None = None


def _av():
    try:
        import av
    except ImportError as e:
        raise InputError(f"frames: reading a video needs PyAV (the `video` extra): {e}") from e
    return av


def read(
    path: str | os.PathLike, start: int = 0, end: int | None = None, stride: int = 1, limit: int = MAX_FRAMES
) -> Clip:
    """Frames `start` to `end` (exclusive, counted in source frames) every `stride`-th, as RGB."""
    av = _av()
    path = Path(path)
    if start < 0 or stride < 1 or (end is not None and end <= start):
        raise InputError(f"frames: start {start}, end {end}, stride {stride}: need 0 <= start < end and stride >= 1")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"frames: {path} is not a video PyAV can open ({e})") from e
    with container:
        if not container.streams.video:
            raise InputError(f"frames: {path} has no video stream")
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
        frames = _decode(container, stream, path, start, end, stride, limit)
    if not frames:
        raise InputError(
            f"frames: {path} has no frames in the range {start} to {end if end is not None else 'the end'}"
        )
    last = start + (len(frames) - 1) * stride + 1
    return Clip(frames, rate / stride, path, start / float(rate), last / float(rate))


def _decode(container, stream, path: Path, start: int, end: int | None, stride: int, limit: int) -> list[np.ndarray]:
    av = _av()
    frames: list[np.ndarray] = []
    index = -1
    try:
        for frame in container.decode(stream):
            index += 1
            if end is not None and index >= end:
                return frames
            if index < start or (index - start) % stride:
                continue
            if len(frames) == limit:
                raise InputError(
                    f"frames: {path} has more than {limit} frames in the range; give an end, a stride or a shorter clip"
                )
            frames.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as e:
        raise InputError(f"frames: {path} is damaged at frame {index + 1} ({e})") from e
    promised = _promised(container, stream)
    if promised and index + 1 < promised - 1 and (end is None or index + 1 < end):
        raise InputError(f"frames: {path} is damaged at frame {index + 1}: it ends there, its header says {promised}")
    return frames


def _promised(container, stream) -> int:
    """How many frames the container says the stream has (0: it does not say)."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    return round(container.duration / 1e6 * float(rate)) if container.duration and rate else 0


def output_format() -> tuple[str, str, str]:
    """(suffix, video encoder, audio encoder) this machine's FFmpeg writes."""
    av = _av()
    for suffix, video, audio in FORMATS:
        if video in av.codecs_available and audio in av.codecs_available:
            try:
                av.codec.Codec(video, "w")
            except Exception:  # listed but not usable for encoding
                continue
            return suffix, video, audio
    raise InputError("frames: this FFmpeg has neither an H.264 nor a VP9 encoder to write the video")


def write(frames: list[np.ndarray], rate: Fraction, dest_stem: Path, audio_from: Clip | None = None) -> Path:
    """The frames as `dest_stem` + .mp4 or .webm at `rate`, with the audio of `audio_from`'s range."""
    av = _av()
    suffix, video_codec, audio_codec = output_format()
    dest = dest_stem.with_name(dest_stem.name + suffix)
    tmp = dest.with_name(dest.name + ".part")
    height, width = frames[0].shape[:2]
    with av.open(str(tmp), "w", format=suffix[1:]) as out:
        stream = out.add_stream(video_codec, rate=rate)
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        audio = _audio_source(audio_from)
        audio_out = out.add_stream(audio_codec, rate=audio[1].rate) if audio else None
        for image in frames:
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(image[: stream.height, : stream.width]), format="rgb24"
            )
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if audio is not None:
            _copy_audio(audio, audio_out, out, audio_from)
    os.replace(tmp, dest)
    return dest


def _audio_source(clip: Clip | None):
    if clip is None or clip.source is None:
        return None
    av = _av()
    container = av.open(str(clip.source))
    if not container.streams.audio:
        container.close()
        return None
    return container, container.streams.audio[0]


def _copy_audio(source, audio_out, out, clip: Clip) -> None:
    """The source's audio between the clip's first and last frame, encoded anew."""
    container, stream = source
    with container:
        resampler = _av().AudioResampler(
            format=audio_out.format.name, layout=audio_out.layout.name, rate=audio_out.rate
        )
        for frame in container.decode(stream):
            t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            if t < clip.start_s or (clip.end_s is not None and t >= clip.end_s):
                continue
            frame.pts = None
            for part in resampler.resample(frame):
                out.mux(audio_out.encode(part))
        out.mux(audio_out.encode())


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES
