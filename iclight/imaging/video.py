"""Video in and out with PyAV, a frame at a time.

Reading: `probe` looks a clip over without decoding it (its frames' timestamps from the packets,
its rate, its display matrix); `Frames` decodes the frames asked for, upright (the display matrix
of a phone held upright, 90/180/270 degrees and flips, applied as players apply it), seeking
where it must, so a long clip is never held whole. Ten-bit sources (HEVC Main 10, VP9 Profile 2)
decode to 8-bit RGB; HDR (PQ or HLG) is not tone-mapped, so its frames come out flat and the relit
video is SDR (BT.709).

Writing: `Writer` encodes frames as they come, each at its source timestamp (a variable frame
rate keeps its timing; the audio stays in step), into MP4/H.264 where the installed FFmpeg has an
H.264 encoder, else WebM/VP9, under a temporary name renamed once complete; the source's audio
over the frames' range is added at the end. Frames are written upright, with no display matrix:
the video plays as the source played.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..core.validation import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif")
# (container suffix, video encoder, audio encoder), the first the installed FFmpeg has
FORMATS = ((".mp4", "libx264", "aac"), (".mp4", "h264", "aac"), (".webm", "libvpx-vp9", "libopus"))
OUTPUT_TIME_BASE = Fraction(1, 90000)  # MP4's usual clock: exact for every common frame rate
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")  # PQ and HLG


def _av():
    try:
        import av
    except ImportError as e:
        raise InputError(f"frames: reading a video needs PyAV (the `video` extra): {e}") from e
    return av


@dataclass(frozen=True)
class Orientation:
    """How a player shows the stored frames: turned counter-clockwise by `turns` quarter turns,
    then mirrored left to right where `hflip` (all eight orientations)."""

    turns: int = 0
    hflip: bool = False

    def upright(self, image: np.ndarray) -> np.ndarray:
        out = np.rot90(image, self.turns) if self.turns else image
        return np.ascontiguousarray(out[:, ::-1] if self.hflip else out)

    @classmethod
    def of(cls, matrix: tuple[int, ...] | None) -> Orientation:
        """From a display matrix (FFmpeg's layout, 16.16 fixed point): the rotation and mirror that
        make it, as FFmpeg writes them (`av_display_rotation_set`, then `av_display_matrix_flip`)."""
        if matrix is None:
            return cls()
        signs = tuple(int(np.sign(matrix[i])) for i in (0, 1, 3, 4))
        for turns in range(4):
            c, s = ((1, 0), (0, 1), (-1, 0), (0, -1))[turns]  # cos and sin of turns x 90 degrees
            plain = (c, -s, s, c)
            for hflip in (False, True):
                made = (-plain[0], plain[1], -plain[2], plain[3]) if hflip else plain
                if made == signs:
                    return cls(turns, hflip)
        return cls()  # not a multiple of 90 degrees: shown as stored


@dataclass(frozen=True)
class VideoInfo:
    """A clip looked over: its frames' timestamps (presentation order, in the stream's clock),
    its nominal rate, how it is shown, its size as shown, its audio, and its sampling."""

    path: Path
    stamps: tuple[int, ...]
    time_base: Fraction
    rate: Fraction
    orientation: Orientation
    size: tuple[int, int]  # width x height, upright
    audio: bool
    ten_bit: bool
    hdr: bool
    name: str = "frames"  # the input it is, for messages

    @property
    def count(self) -> int:
        return len(self.stamps)

    def seconds(self, index: int) -> float:
        """Frame `index`'s time from the first frame's."""
        return float((self.stamps[index] - self.stamps[0]) * self.time_base)


def probe(path: str | os.PathLike, name: str = "frames") -> VideoInfo:
    """The clip at `path` looked over (its packets read, nothing decoded), or an InputError naming
    the input (`name`): not a video, no video stream, or a header promising more frames than it holds."""
    av, path = _av(), Path(path)
    container = _open(path, name)
    with container:
        if not container.streams.video:
            raise InputError(f"{name}: {path} has no video stream")
        stream = container.streams.video[0]
        try:
            stamps = sorted(_stamp(p) for p in container.demux(stream) if _stamp(p) is not None and p.size)
        except av.error.FFmpegError as e:
            raise InputError(f"{name}: {path} is damaged ({e})") from e
        promised = _promised(container, stream)
        if promised and len(stamps) < promised - 1:
            raise InputError(
                f"{name}: {path} is damaged at frame {len(stamps)}: it ends there, its header says {promised}"
            )
        base = stream.time_base or Fraction(1, 1)
        rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
        ctx = stream.codec_context
        orientation = Orientation.of(_display_matrix(container, stream))
        w, h = ctx.width, ctx.height
        size = (h, w) if orientation.turns % 2 else (w, h)
        ten_bit = "10" in (ctx.pix_fmt or "")
        hdr = str(getattr(ctx, "color_trc", "") or "").lower() in HDR_TRANSFERS
        audio = bool(container.streams.audio)
        return VideoInfo(path, tuple(stamps), base, rate, orientation, size, audio, ten_bit, hdr, name)


def _stamp(item) -> int | None:
    """A packet's or a frame's presentation time (its decoding time where it has none)."""
    return item.pts if item.pts is not None else item.dts


def _open(path: Path, name: str = "frames"):
    av = _av()
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{name}: {path} is not a video PyAV can open ({e})") from e


def _promised(container, stream) -> int:
    """How many frames the container says the stream has (0: it does not say)."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    return round(container.duration / 1e6 * float(rate)) if container.duration and rate else 0


def _display_matrix(container, stream) -> tuple[int, ...] | None:
    """The display matrix of the stream's first frame (where FFmpeg hands it over)."""
    container.seek(0, stream=stream)
    for frame in container.decode(stream):
        for data in frame.side_data:
            if "DISPLAYMATRIX" in str(data.type):
                return struct.unpack("<9i", bytes(data))
        return None
    return None


class Frames:
    """Upright RGB frames of a clip by index (presentation order), decoded as they are asked for:
    forward from where the decoder is, else (going back, or far ahead) from a seek to the keyframe
    before; the last `kept` frames handed out are kept, as a sequence asks for its reference
    frames again with every window."""

    SEEK_AHEAD = 48  # frames: decoding forward further than this costs more than a seek

    def __init__(self, info: VideoInfo, kept: int = 32) -> None:
        self.info, self.kept = info, kept
        self._index = {stamp: i for i, stamp in enumerate(info.stamps)}
        self._container = self._decoded = None
        self._next = 0  # no frame before this index is still to come from the open decoder
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()

    def get(self, indices: list[int]) -> dict[int, np.ndarray]:
        found = {i: self._recent[i] for i in indices if i in self._recent}
        for index in sorted(set(indices) - set(found)):
            if self._container is None or index < self._next or index - self._next > self.SEEK_AHEAD:
                self._seek(index)
            found[index] = self._decode_to(index)
        for index in indices:
            self._recent[index] = found[index]
            self._recent.move_to_end(index)
        while len(self._recent) > self.kept:
            self._recent.popitem(last=False)
        return found

    def _decode_to(self, wanted: int) -> np.ndarray:
        av = _av()
        try:
            while True:
                frame = next(self._decoded, None)
                if frame is None:
                    raise InputError(
                        f"{self.info.name}: {self.info.path} is damaged at frame {self._next}: it ends there"
                    )
                index = self._index.get(_stamp(frame))
                if index is None or index < self._next:
                    continue  # before the frame a seek asked for
                self._next = index + 1
                if index == wanted:
                    return self.info.orientation.upright(frame.to_ndarray(format="rgb24"))
                if index > wanted:
                    raise InputError(f"{self.info.name}: {self.info.path} is damaged: frame {wanted} cannot be decoded")
        except av.error.FFmpegError as e:
            raise InputError(f"{self.info.name}: {self.info.path} is damaged at frame {self._next} ({e})") from e

    def _seek(self, index: int) -> None:
        self.close()
        self._container = _open(self.info.path, self.info.name)
        stream = self._container.streams.video[0]
        if index > 0:
            self._container.seek(self.info.stamps[index], stream=stream, backward=True, any_frame=False)
        self._decoded = self._container.decode(stream)
        self._next = 0

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = self._decoded = None


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


class Writer:
    """A video written a frame at a time, each at its time in seconds, to `dest_stem` + .mp4 (or
    .webm) under a temporary name; `close` adds the audio of `audio` (a clip, and the range of its
    time in seconds from its first frame) and gives the file its name. A writer not closed leaves
    no video."""

    def __init__(self, dest_stem: Path, rate: Fraction, audio: tuple[Path, float, float] | None = None) -> None:
        suffix, self.video_codec, self.audio_codec = output_format()
        self.dest = dest_stem.with_name(dest_stem.name + suffix)
        self.part = self.dest.with_name(self.dest.name + ".part")
        self.rate, self.audio = rate, audio
        self._out = self._stream = self._audio_stream = None
        self._format = suffix[1:]

    def add(self, image: np.ndarray, seconds: float) -> None:
        av = _av()
        if self._out is None:
            self._start(image)
        h, w = self._stream.height, self._stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
        frame.pts = round(Fraction(seconds).limit_denominator(1 << 30) / OUTPUT_TIME_BASE)
        frame.time_base = OUTPUT_TIME_BASE
        self._out.mux(self._stream.encode(frame))

    def _start(self, image: np.ndarray) -> None:
        av = _av()
        self._out = av.open(str(self.part), "w", format=self._format)
        stream = self._out.add_stream(self.video_codec, rate=self.rate)
        height, width = image.shape[:2]
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = OUTPUT_TIME_BASE
        self._stream = stream
        rate = _audio_rate(self.audio[0]) if self.audio else None
        if rate:  # every stream is declared before the first frame is written
            self._audio_stream = self._out.add_stream(self.audio_codec, rate=rate)

    def close(self) -> Path:
        """Finish the video (with the audio between the given seconds of its clip) and name it."""
        self._out.mux(self._stream.encode())
        if self._audio_stream is not None:
            _add_audio(self._out, self._audio_stream, *self.audio)
        self._out.close()
        self._out = None
        os.replace(self.part, self.dest)
        return self.dest

    def abandon(self) -> None:
        """Drop what was written (a run that stopped): no half-written video is left."""
        if self._out is not None:
            self._out.close()
            self._out = None
        self.part.unlink(missing_ok=True)


def _audio_rate(source: Path) -> int | None:
    """The sample rate of `source`'s audio (None: it has none)."""
    with _av().open(str(source)) as container:
        return container.streams.audio[0].rate if container.streams.audio else None


def _add_audio(out, audio_out, source: Path, start_s: float, end_s: float) -> None:
    """The audio of `source` between `start_s` and `end_s` (from its first frame), encoded anew."""
    av = _av()
    with av.open(str(source)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format=audio_out.format.name, layout=audio_out.layout.name, rate=audio_out.rate)
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        for frame in container.decode(stream):
            t = float(frame.pts * frame.time_base) - origin if frame.pts is not None else 0.0
            if t < start_s or t >= end_s:
                continue
            frame.pts = None
            for part in resampler.resample(frame):
                out.mux(audio_out.encode(part))
        out.mux(audio_out.encode())


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES
