"""`cti transcribe FILE... [--json] [--summary]`: batch transcription with a progress bar.

Exit codes: 0 all files done; 2 a file was missing, empty, corrupt or not audio (the
others are still transcribed); 1 the model or the summary backend is unavailable.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import structlog

from cti.transcribe.asr import ModelError, load_recognizer
from cti.transcribe.audio import AudioError
from cti.transcribe.pipeline import Result, summarize_for, summarize_sync, transcribe_redacted, uses_llm
from cti.transcribe.summarize import SummaryError


def _clock(t: float) -> str:
    m, s = divmod(max(0.0, t), 60)
    return f"{int(m):02d}:{s:04.1f}"


def format_text(file: str, result: Result) -> str:
    lines = [f"== {file}"]
    for s in result.segments:
        lines.append(f"[{_clock(s.start)}-{_clock(s.end)}] {s.speaker}: {s.text}")
    if result.summary is not None:
        lines.append("-- summary")
        lines.append(result.summary.as_text())
    return "\n".join(lines)


def transcribe_files(
    files: list[str],
    *,
    as_json: bool,
    summary: bool,
    settings: Any,
    console: Any,
    out: TextIO | None = None,
    recognizer: Any = None,
    speakers: Sequence[str] | None = None,
) -> int:
    """Transcribe each file; print text (or one JSON object per line) on `out` (stdout)."""
    out = out or sys.stdout
    if not structlog.is_configured():
        # logs must never mix with the JSON lines on stdout
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    if not files:
        console.print("[red]error:[/red] no files given")
        return 2
    try:
        recognizer = recognizer or load_recognizer(settings)
    except ModelError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    failed: list[str] = []
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=len(files) < 2,
    )
    with progress:
        task = progress.add_task("transcribing", total=len(files))
        for f in files:
            progress.update(task, description=f"transcribing {f}")
            try:
                result = transcribe_redacted(
                    recognizer, f, redact_emails=bool(getattr(settings, "redact_emails", False)),
                    diarize=bool(getattr(settings, "diarize_mono", False)), speakers=speakers,
                )
                if summary:
                    if uses_llm(settings):
                        result.summary = asyncio.run(summarize_for(settings, result.segments))
                    else:
                        result.summary = summarize_sync(settings, result.segments)
            except AudioError as exc:
                failed.append(f)
                console.print(f"[red]error:[/red] {exc}")
                progress.advance(task)
                continue
            except SummaryError as exc:
                console.print(f"[red]error:[/red] {f}: {exc}")
                return 1
            if as_json:
                out.write(json.dumps(result.to_dict(file=f), ensure_ascii=False) + "\n")
            else:
                out.write(format_text(f, result) + "\n")
            out.flush()
            progress.advance(task)
    if failed:
        # named again at the end: the per-file errors scroll away in a long batch
        from rich.markup import escape

        console.print(f"[red]{len(failed)} of {len(files)} file(s) could not be transcribed: "
                      f"{escape(', '.join(failed))}[/red]")
        return 2
    return 0
