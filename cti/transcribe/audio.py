"""Decode any recording into float32 16 kHz samples, one row per channel.

PyAV (FFmpeg) reads what providers send: 8 kHz mu-law WAV (Twilio, Asterisk
MixMonitor), 16-bit PCM WAV, MP3, OGG. Channels are kept apart because stereo
call recordings carry one party per channel (left = agent, right = customer).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """The file is missing, empty, corrupt or not audio; the message says which."""


def load_audio(
    source: str | Path | bytes, *, sample_rate: int = SAMPLE_RATE, name: str = "audio"
) -> np.ndarray:
    """Return a float32 array shaped (channels, samples) at `sample_rate`.

    `source` is a path, or the file's bytes (a decrypted recording never touches disk).
    """
    import av  # local import: only workers and the CLI need FFmpeg

    if isinstance(source, bytes | bytearray):
        p = Path(name)
        if not source:
            raise AudioError(f"{p}: empty file")
        opened: object = io.BytesIO(source)
    else:
        p = Path(source)
        if not p.exists():
            raise AudioError(f"{p}: no such file")
        if not p.is_file():
            raise AudioError(f"{p}: not a regular file")
        if p.stat().st_size == 0:
            raise AudioError(f"{p}: empty file")
        opened = str(p)
    try:
        container = av.open(opened, mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
        text = _looks_like_text(source)
        if text:
            raise AudioError(
                f"{p}: not a readable audio file: {text}, not audio (an error page saved as the recording?)"
            ) from None
        raise AudioError(f"{p}: not a readable audio file ({exc})") from None
    try:
        streams = container.streams.audio
        if not streams:
            raise AudioError(f"{p}: contains no audio stream")
        stream = streams[0]
        channels = max(1, min(2, stream.codec_context.channels or 1))
        layout = "stereo" if channels == 2 else "mono"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        blocks = _Blocks(block=30 * sample_rate)
        try:
            for frame in container.decode(stream):
                frame.pts = None  # resampler re-times; odd pts in some WAVs only confuse it
                for out in resampler.resample(frame):
                    blocks.add(out.to_ndarray())
            for out in resampler.resample(None):
                blocks.add(out.to_ndarray())
        except av.error.FFmpegError as exc:
            raise AudioError(f"{p}: corrupt audio data ({exc})") from None
    finally:
        container.close()
    audio = blocks.join()
    if audio is None or audio.shape[1] == 0:
        raise AudioError(f"{p}: no audio samples")
    return audio


class _Blocks:
    """Decoded frames gathered into blocks of `block` samples, then joined once.

    A long call decodes into tens of thousands of small frames: kept as they are, their
    freed memory stays in the heap (a 30-minute call held twice its size after decoding),
    and joining them at the end needs a second full copy. Blocks are big enough to be
    given back to the system as soon as they are copied into the result.
    """

    def __init__(self, *, block: int) -> None:
        self.block = block
        self.blocks: list[np.ndarray] = []
        self.pending: list[np.ndarray] = []
        self.pending_n = 0

    def add(self, frame: np.ndarray) -> None:
        self.pending.append(frame)
        self.pending_n += frame.shape[1]
        if self.pending_n >= self.block:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.blocks.append(np.concatenate(self.pending, axis=1).astype(np.float32, copy=False))
        self.pending, self.pending_n = [], 0

    def join(self) -> np.ndarray | None:
        self._flush()
        if not self.blocks:
            return None
        n = sum(b.shape[1] for b in self.blocks)
        # np.empty pages are backed only when written: with each block freed once copied,
        # decoding never holds much more than the result itself
        out = np.empty((self.blocks[0].shape[0], n), dtype=np.float32)
        pos = 0
        self.blocks.reverse()
        while self.blocks:
            b = self.blocks.pop()
            out[:, pos: pos + b.shape[1]] = b
            pos += b.shape[1]
        return out


def _looks_like_text(source: str | Path | bytes) -> str | None:
    """'an HTML page', 'JSON' or 'text' when the start of an unreadable file says so.

    A recording URL that has expired or needs other credentials answers with an error
    page, which gets saved under the recording's name; FFmpeg's "Invalid data" does not
    tell the operator that the download, not the audio, went wrong.
    """
    try:
        if isinstance(source, bytes | bytearray):
            head = bytes(source[:512])
        else:
            with Path(source).open("rb") as f:
                head = f.read(512)
    except OSError:
        return None
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "an HTML page"
    if start.startswith((b"{", b"[")):
        return "JSON"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text" if head and all(c >= 32 or c in b"\t\r\n" for c in head) else None


def zero_paused(
    audio: np.ndarray, paused: list[list[float]] | None, *, sample_rate: int = SAMPLE_RATE
) -> None:
    """Silence (in place) the spans recorded while recording was paused: never transcribed."""
    for span in paused or []:
        start, end = float(span[0]), float(span[1])
        a = max(0, int(start * sample_rate))
        b = min(audio.shape[-1], int(np.ceil(end * sample_rate)))
        if b > a:
            audio[..., a:b] = 0.0


def is_dual_channel(audio: np.ndarray, *, max_correlation: float = 0.9) -> bool:
    """True when the two channels carry different signals (not a mono file saved as stereo).

    A mixed call saved as "stereo" is not always two identical rows: each side may have
    its own gain or polarity (a PBX mixing both legs into both sides), so the rows differ
    sample by sample yet are one signal. Transcribed as two parties, every word would come
    out twice. Real two-party channels share at most some echo, far below `max_correlation`.
    """
    if audio.ndim != 2 or audio.shape[0] < 2 or audio.shape[1] == 0:
        return False
    sums = _channel_sums(audio[0], audio[1]) / audio.shape[1]
    level = (sums[5] + sums[6]) / 2 or 1.0
    if sums[7] / level <= 0.05:
        return False
    return abs(_correlation(sums)) < max_correlation


def mono_mix(audio: np.ndarray) -> np.ndarray:
    """One channel for a recording whose channels carry the same signal (or one party).

    The second row is added inverted when it is in opposite polarity to the first:
    averaged as is, such a "stereo" mix cancels itself out and nothing is transcribed.
    """
    if audio.ndim == 1:
        return np.ascontiguousarray(audio)
    if audio.shape[0] == 1:
        return np.ascontiguousarray(audio[0])
    sign = -1.0 if _correlation(_channel_sums(audio[0], audio[1]) / max(1, audio.shape[1])) < 0 else 1.0
    return ((audio[0] + sign * audio[1]) / 2).astype(np.float32, copy=False)


def _correlation(means: np.ndarray) -> float:
    """Pearson correlation from `_channel_sums` divided by the sample count (0 if a side is silent)."""
    mean_l, mean_r, sq_l, sq_r, prod = means[:5]
    var_l, var_r = sq_l - mean_l**2, sq_r - mean_r**2
    if var_l <= 1e-12 or var_r <= 1e-12:
        return 0.0
    return float((prod - mean_l * mean_r) / np.sqrt(var_l * var_r))


def _channel_sums(left: np.ndarray, right: np.ndarray, *, block: int = 1 << 20) -> np.ndarray:
    """Sums of l, r, l^2, r^2, l*r, |l|, |r|, |l-r| over the samples, a block at a time.

    Whole-array temporaries of a long call cost hundreds of MB each (a worker's memory
    must stay bounded), and float32 sums over millions of samples lose precision.
    """
    out = np.zeros(8)
    for i in range(0, left.shape[0], block):
        a = left[i: i + block].astype(np.float64)
        b = right[i: i + block].astype(np.float64)
        out += [a.sum(), b.sum(), (a * a).sum(), (b * b).sum(), (a * b).sum(),
                np.abs(a).sum(), np.abs(b).sum(), np.abs(a - b).sum()]
    return out
