"""Who spoke when in a mono recording: two speakers, no extra model.

Stereo recordings answer this for free (one party per channel); mono ones (Twilio's
default) do not. Speech is cut into chunks at short pauses (Silero VAD, shipped with
faster-whisper); each chunk is described by its voice (median pitch by YIN and the main
directions of its spectral envelope) and the chunks are split into two groups with
k-means. The split is used only when the two groups are clearly apart; otherwise the
words stay "unknown" (a wrong owner on an action item is worse than none). The agent is
the group that speaks first (the agent answers, or places, a business call), unless the
words say otherwise ("how can I help", "your account" vs "my order").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cti.transcribe.audio import SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Chunk:
    start: float
    end: float


def speech_chunks(audio: np.ndarray, *, min_silence_ms: int = 200) -> list[Chunk]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions(min_silence_duration_ms=min_silence_ms, speech_pad_ms=30, min_speech_duration_ms=200)
    return [Chunk(t["start"] / SAMPLE_RATE, t["end"] / SAMPLE_RATE) for t in get_speech_timestamps(audio, opts)]


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    if len(x) < size:
        x = np.pad(x, (0, size - len(x)))
    n = 1 + (len(x) - size) // hop
    return x[np.arange(size)[None, :] + hop * np.arange(n)[:, None]]


def mel_matrix(n_fft: int = 512, n_mels: int = 24, fmin: float = 100.0, fmax: float = 3800.0) -> np.ndarray:
    """Triangular mel filters inside the telephone band."""
    def to_mel(f: Any) -> Any:
        return 2595 * np.log10(1 + np.asarray(f) / 700)

    hz = 700 * (10 ** (np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2) / 2595) - 1)
    bins = np.floor((n_fft + 1) * hz / SAMPLE_RATE).astype(int)
    m = np.zeros((n_mels, n_fft // 2 + 1))
    for i in range(n_mels):
        a, b, c = bins[i], bins[i + 1], bins[i + 2]
        if b > a:
            m[i, a:b] = (np.arange(a, b) - a) / (b - a)
        if c > b:
            m[i, b:c] = (c - np.arange(b, c)) / (c - b)
    return m


def median_pitch(frames: np.ndarray, fmin: float = 70.0, fmax: float = 400.0) -> float | None:
    """log F0, median over frames, by YIN (cumulative-mean-normalized difference: few octave errors)."""
    hi, lo = int(SAMPLE_RATE / fmin), int(SAMPLE_RATE / fmax)
    w = frames.shape[1] - hi
    if w <= 0 or not len(frames):
        return None
    base = frames[:, :w]
    d = np.stack([((base - frames[:, t: t + w]) ** 2).sum(axis=1) for t in range(1, hi + 1)], axis=1)
    cmnd = d * np.arange(1, hi + 1) / (np.cumsum(d, axis=1) + 1e-10)
    f0s = []
    for row in cmnd:
        below = np.nonzero(row[lo - 1:] < 0.25)[0]
        if below.size:
            i = below[0] + lo - 1
            while i + 1 < row.size and row[i + 1] < row[i]:
                i += 1
            f0s.append(SAMPLE_RATE / (i + 1))
    return float(np.log(np.median(f0s))) if len(f0s) >= 3 else None


def voice_features(audio: np.ndarray, chunk: Chunk, mel: np.ndarray) -> np.ndarray | None:
    x = audio[int(chunk.start * SAMPLE_RATE): int(chunk.end * SAMPLE_RATE)].astype(np.float64)
    if len(x) < SAMPLE_RATE // 5:
        return None
    raw = _frames(x, 512, 160)
    energy = (raw**2).mean(axis=1)
    loud = energy > 0.1 * energy.max()
    if loud.sum() < 3:
        return None
    spec = np.abs(np.fft.rfft(raw[loud] * np.hanning(512), axis=1)) ** 2
    envelope = np.log(spec @ mel.T + 1e-10).mean(axis=0)
    f0 = median_pitch(raw[loud])
    if f0 is None:
        return None
    return np.concatenate([[f0], envelope - envelope.mean()])  # level does not tell voices apart


def reduce(feats: np.ndarray, components: int = 3) -> np.ndarray:
    """Pitch (weight 2) + the main directions of the spectral envelope, each scaled to unit spread."""
    env = feats[:, 1:] - feats[:, 1:].mean(axis=0)
    _u, _s, vt = np.linalg.svd(env, full_matrices=False)
    pcs = env @ vt[:components].T
    pcs = pcs / (pcs.std(axis=0) + 1e-6)
    pitch = (feats[:, :1] - feats[:, :1].mean()) / (feats[:, :1].std() + 1e-6)
    return np.concatenate([2 * pitch, pcs], axis=1)


def two_means(z: np.ndarray, weights: np.ndarray | None = None, iters: int = 30) -> tuple[np.ndarray, float]:
    """k-means, k=2, farthest-point start. Returns labels and separation (centre distance / spread)."""
    w = np.ones(len(z)) if weights is None else weights
    a = int(np.argmax(((z - z.mean(axis=0)) ** 2).sum(axis=1)))
    b = int(np.argmax(((z - z[a]) ** 2).sum(axis=1)))
    centers = np.stack([z[a], z[b]])
    labels = np.full(len(z), -1)
    for _ in range(iters):
        new = ((z[:, None, :] - centers[None]) ** 2).sum(axis=2).argmin(axis=1)
        if (new == labels).all():
            break
        labels = new
        for k in (0, 1):
            if (labels == k).any():
                centers[k] = np.average(z[labels == k], axis=0, weights=w[labels == k])
    if len(set(labels.tolist())) < 2:
        return labels, 0.0
    spread = np.mean([np.sqrt(((z[labels == k] - centers[k]) ** 2).sum(axis=1)).mean() for k in (0, 1)])
    return labels, float(np.sqrt(((centers[0] - centers[1]) ** 2).sum()) / (spread + 1e-6))


_AGENT_CUES = re.compile(
    r"\b(?:how (?:can|may) i help|thank(?:s| you) for calling|speaking|your (?:account|order|number|ticket|plan)"
    r"|let me check|i can see|one moment)\b", re.IGNORECASE)
_CUSTOMER_CUES = re.compile(r"\b(?:my (?:order|account|bill|card|plan)|i was charged|i'd like to)\b", re.IGNORECASE)


def chunk_labels(audio: np.ndarray, *, min_separation: float = 1.2) -> tuple[list[Chunk], list[int]] | None:
    """Chunks and a 0/1 voice label for each (-1: too short to tell), or None if not two clear voices."""
    chunks = speech_chunks(audio)
    mel = mel_matrix()
    feats, keep = [], []
    for i, c in enumerate(chunks):
        f = voice_features(audio, c, mel)
        if f is not None:
            feats.append(f)
            keep.append(i)
    if len(feats) < 4:
        return None
    durations = np.array([chunks[i].end - chunks[i].start for i in keep])
    labels, separation = two_means(reduce(np.stack(feats)), durations)
    if separation < min_separation:
        return None
    out = [-1] * len(chunks)
    for j, i in enumerate(keep):
        out[i] = int(labels[j])
    return chunks, out


def label_words(words: Sequence[Any], audio: np.ndarray) -> list[Any]:
    """Words of a mono recording with speaker "agent"/"customer", or unchanged when unsure."""
    if len(words) < 4:
        return list(words)
    found = chunk_labels(audio)
    if found is None:
        return list(words)
    chunks, labels = found
    starts = np.array([c.start for c in chunks])
    clusters: list[int] = []
    for w in words:
        mid = (w.start + w.end) / 2
        i = max(0, int(np.searchsorted(starts, mid, side="right")) - 1)
        if mid > chunks[i].end and i + 1 < len(chunks) and chunks[i + 1].start - mid < mid - chunks[i].end:
            i += 1
        clusters.append(labels[i])
    # words in chunks too short to describe take their neighbour's voice
    last = next((c for c in clusters if c >= 0), 0)
    for k, c in enumerate(clusters):
        last = c if c >= 0 else last
        clusters[k] = last
    agent = _agent_cluster(words, clusters, chunks, labels)
    return [replace(w, speaker="agent" if c == agent else "customer") for w, c in zip(words, clusters, strict=True)]


def _agent_cluster(words: Sequence[Any], clusters: list[int], chunks: list[Chunk], labels: list[int]) -> int:
    score = {0: 0.0, 1: 0.0}
    # who speaks first: the labelled speech in the first 3 seconds of talk, by duration
    t0 = next((c.start for c, lab in zip(chunks, labels, strict=True) if lab >= 0), 0.0)
    for c, lab in zip(chunks, labels, strict=True):
        if lab >= 0 and c.start < t0 + 3.0:
            score[lab] += 3.0 * (min(c.end, t0 + 3.0) - c.start) / 3.0
    for k in (0, 1):
        text = "".join(w.text for w, c in zip(words, clusters, strict=True) if c == k)
        score[k] += len(_AGENT_CUES.findall(text)) - len(_CUSTOMER_CUES.findall(text))
    return 0 if score[0] >= score[1] else 1
