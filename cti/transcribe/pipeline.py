"""One recording -> redacted transcript -> summary. Shared by the worker and the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from cti.transcribe.asr import Recognizer, Segment, Transcript, transcribe_audio
from cti.transcribe.audio import load_audio
from cti.transcribe.redact import redact_segments
from cti.transcribe.summarize import Summary, SummaryError, summarize, summarize_llm

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Result:
    transcript: Transcript          # raw timings, model, language (its text is NOT redacted: don't store)
    segments: list[Segment]         # redacted
    redactions: list[str] = field(default_factory=list)  # kinds found, never values
    summary: Summary | None = None

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    def to_dict(self, file: str | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if file is not None:
            d["file"] = file
        d["text"] = self.text
        d["segments"] = [s.to_dict() for s in self.segments]
        if self.summary is not None:
            d["summary"] = self.summary.to_dict()
        return d


def transcribe_redacted(
    recognizer: Recognizer,
    source: str | Path | bytes | np.ndarray,
    *,
    paused: list[list[float]] | None = None,
    redact_emails: bool = False,
    diarize: bool = False,
    speakers: Sequence[str] | None = None,
) -> Result:
    """CPU-bound: decode, transcribe (paused spans skipped), redact. Run it in a thread.
    `speakers`: who is on the left and right channel of a stereo recording."""
    audio = source if isinstance(source, np.ndarray) else load_audio(source)
    transcript = transcribe_audio(recognizer, audio, paused=paused, diarize=diarize, speakers=speakers)
    texts, kinds = redact_segments([s.text for s in transcript.segments], emails=redact_emails)
    segments = [Segment(s.start, s.end, s.speaker, t) for s, t in zip(transcript.segments, texts, strict=True)]
    return Result(transcript=transcript, segments=segments, redactions=kinds)


def uses_llm(settings: Any) -> bool:
    return str(getattr(settings, "summary", "extractive")) in ("llm", "openai") and bool(
        getattr(settings, "base_url", None)
    )


def summarize_sync(settings: Any, segments: list[Segment]) -> Summary | None:
    """The extractive summary (or None when `summary = "none"`)."""
    if str(getattr(settings, "summary", "extractive")) == "none":
        return None
    return summarize(segments, language=getattr(settings, "language", "en"))


async def summarize_for(
    settings: Any, segments: list[Segment], *, session: Any = None, fallback: bool = False
) -> Summary | None:
    """Summary by the configured backend: `extractive` (offline) or `llm` (OpenAI-compatible).

    `fallback`: when the endpoint fails, use the offline summary instead of raising (the
    worker does: a transcript should not wait on someone else's server).
    """
    if uses_llm(settings):
        try:
            return await summarize_llm(
                segments,
                base_url=str(settings.base_url),
                model=str(getattr(settings, "summary_model", None) or "gpt-4o-mini"),
                api_key=getattr(settings, "api_key", None),
                session=session,
            )
        except SummaryError as exc:
            if not fallback:
                raise
            log.warning("summary_llm_failed_using_extractive", error=str(exc))
    return await asyncio.to_thread(summarize_sync, settings, segments)
