"""The OpenAI-compatible summary backend, against a tiny fake server on loopback."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from cti.config import TranscribeSettings
from cti.transcribe.asr import Word
from cti.transcribe.pipeline import summarize_for, transcribe_redacted
from cti.transcribe.summarize import SummaryError

CARD = "4111 1111 1111 1111"


class ScriptedRecognizer:
    """Stands in for the model to inject sensitive words (the ASR itself is tested elsewhere)."""

    name, language = "scripted", "en"

    def words(self, audio: np.ndarray, *, speaker: str) -> list[Word]:
        text = {"agent": "Can I have the card number and security code?",
                "customer": f"Sure it's {CARD} and the security code is 123. I'll post the form tomorrow."}[speaker]
        start = 0.0 if speaker == "agent" else 3.0
        return [Word(start + i * 0.2, start + i * 0.2 + 0.2, " " + w, speaker) for i, w in enumerate(text.split())]


@pytest.fixture
async def fake_llm():
    seen: list[dict[str, Any]] = []
    mode = {"reply": "ok"}

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("Authorization")})
        if mode["reply"] == "500":
            return web.Response(status=500)
        if mode["reply"] == "junk":
            return web.json_response({"choices": [{"message": {"content": "I think the call went well."}}]})
        content = json.dumps({
            "key_points": ["Customer paid by card"],
            "action_items": [{"owner": "customer", "text": "Post the form", "due": "tomorrow"}],
            "key_facts": ["card payment"], "disposition": "sale", "sentiment": "positive",
        })
        fenced = f"```json\n{content}\n```"  # some servers wrap JSON in a code fence
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": fenced}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", seen, mode
    finally:
        await runner.cleanup()


async def test_llm_gets_redacted_text_and_returns_the_same_structure(fake_llm) -> None:
    base_url, seen, _mode = fake_llm
    settings = TranscribeSettings(summary="llm", base_url=base_url, summary_model="small-model", api_key="k-123")
    audio = np.zeros((2, 16000 * 6), dtype=np.float32)
    audio[1, 100] = 0.5  # two different channels -> stereo
    result = transcribe_redacted(ScriptedRecognizer(), audio)
    summary = await summarize_for(settings, result.segments)
    assert summary is not None
    assert summary.disposition == "sale" and summary.sentiment == "positive"
    assert [(a.owner, a.due) for a in summary.action_items] == [("customer", "tomorrow")]
    sent = json.dumps(seen[0]["body"])
    assert "4111" not in sent and "123" not in sent
    assert "[REDACTED CARD]" in sent and "[REDACTED CVV]" in sent
    assert seen[0]["body"]["model"] == "small-model"
    assert seen[0]["auth"] == "Bearer k-123"
    assert "customer: Sure it's [REDACTED CARD]" in seen[0]["body"]["messages"][1]["content"]


async def test_llm_errors_are_clear(fake_llm) -> None:
    base_url, _seen, mode = fake_llm
    settings = TranscribeSettings(summary="llm", base_url=base_url)
    segs = [{"speaker": "agent", "text": "Hello."}]
    mode["reply"] = "500"
    with pytest.raises(SummaryError, match="HTTP 500"):
        await summarize_for(settings, segs)
    mode["reply"] = "junk"
    with pytest.raises(SummaryError, match="no JSON summary"):
        await summarize_for(settings, segs)
    with pytest.raises(SummaryError, match="unreachable"):
        await summarize_for(TranscribeSettings(summary="llm", base_url="http://127.0.0.1:9/v1"), segs)


async def test_worker_falls_back_to_the_offline_summary(fake_llm) -> None:
    base_url, seen, mode = fake_llm
    mode["reply"] = "500"
    segs = [{"speaker": "agent", "text": "I'll send you the contract by Monday."}]
    summary = await summarize_for(TranscribeSettings(summary="llm", base_url=base_url), segs, fallback=True)
    assert summary is not None and len(seen) == 1
    assert [(a.owner, a.due) for a in summary.action_items] == [("agent", "Monday")]
