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
        raise AudioError(f"{p}: not a readable audio file ({exc})") from None
    try:
        streams = container.streams.audio
        if not streams:
            raise AudioError(f"{p}: contains no audio stream")
        stream = streams[0]
        channels = max(1, min(2, stream.codec_context.channels or 1))
        layout = "stereo" if channels == 2 else "mono"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                frame.pts = None  # resampler re-times; odd pts in some WAVs only confuse it
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            raise AudioError(f"{p}: corrupt audio data ({exc})") from None
    finally:
        container.close()
    if not chunks:
        raise AudioError(f"{p}: no audio samples")
    audio = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if audio.shape[1] == 0:
        raise AudioError(f"{p}: no audio samples")
    return audio


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


def is_dual_channel(audio: np.ndarray) -> bool:
    """True when the two channels carry different signals (not a mono file saved as stereo)."""
    if audio.ndim != 2 or audio.shape[0] < 2:
        return False
    diff = float(np.abs(audio[0] - audio[1]).mean())
    level = float(np.abs(audio).mean()) or 1.0
    return diff / level > 0.05
