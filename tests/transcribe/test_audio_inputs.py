"""Recordings as providers and users really send them: odd layouts, encodings and lengths."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cti.transcribe.asr import Word, transcribe_audio
from cti.transcribe.audio import SAMPLE_RATE, is_dual_channel, load_audio, mono_mix
from cti.transcribe.textnorm import normalize, wer
from tests.transcribe.conftest import DATA


def _stereo_clip(seconds: float = 4.0) -> tuple[np.ndarray, int]:
    data, sr = sf.read(str(DATA / "c01_billing_dispute.stereo.wav"), always_2d=True)
    return data[: int(seconds * sr)], sr


@pytest.mark.parametrize(
    ("name", "fmt", "subtype", "rate"),
    [
        ("pcm16_44k.wav", "WAV", "PCM_16", 44_100),
        ("pcm16_48k.wav", "WAV", "PCM_16", 48_000),
        ("alaw.wav", "WAV", "ALAW", 8_000),
        ("pcm24.wav", "WAV", "PCM_24", 16_000),
        ("float.wav", "WAV", "FLOAT", 8_000),
        ("extensible.wav", "WAVEX", "PCM_16", 8_000),
        ("call.flac", "FLAC", "PCM_16", 8_000),
        ("call.ogg", "OGG", "VORBIS", 16_000),
        ("call.mp3", "MP3", "MPEG_LAYER_III", 16_000),
        ("mp3_named.wav", "MP3", "MPEG_LAYER_III", 16_000),  # wrong extension
    ],
)
def test_common_encodings_decode_to_two_16khz_channels(tmp_path: Path, name: str, fmt: str, subtype: str,
                                                         rate: int) -> None:
    clip = load_audio(DATA / "c01_billing_dispute.stereo.wav", sample_rate=rate)[:, : 4 * rate]
    path = tmp_path / name
    sf.write(str(path), clip.T, rate, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.shape[0] == 2 and abs(audio.shape[1] - 4 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    assert is_dual_channel(audio)  # agent left, customer right survive the codec


def test_wav_still_being_written_with_zero_lengths_in_its_header(tmp_path: Path) -> None:
    """Asterisk MixMonitor fills in the RIFF and data sizes only when the call ends."""
    data, sr = _stereo_clip()
    path = tmp_path / "streaming.wav"
    sf.write(str(path), data, sr, subtype="ULAW")
    raw = bytearray(path.read_bytes())
    raw[4:8] = struct.pack("<I", 0)
    at = raw.find(b"data")
    raw[at + 4: at + 8] = struct.pack("<I", 0)
    path.write_bytes(bytes(raw))
    assert load_audio(path).shape == (2, 4 * SAMPLE_RATE)


def test_mixed_call_saved_as_stereo_with_other_gain_and_polarity_is_transcribed_once(recognizer,
                                                                                      tmp_path: Path) -> None:
    """Both parties on both channels (one side quieter, inverted): one speaker, no word said twice."""
    mono, sr = sf.read(str(DATA / "c01_billing_dispute.mono.wav"))
    part = mono[: int(9 * sr)]
    path = tmp_path / "mixed.wav"
    sf.write(str(path), np.stack([part, -0.6 * part], axis=1), sr, subtype="ULAW")
    audio = load_audio(path)
    assert not is_dual_channel(audio)
    t = transcribe_audio(recognizer, audio)
    assert not t.stereo
    assert {s.speaker for s in t.segments} == {"unknown"}
    norm = normalize(t.text)
    assert norm.count("northwind") == 1  # said once, and not cancelled out by the inverted side
    assert norm.count("help") == 1
    # exactly inverted, the plain average of the two sides would be silence
    assert np.allclose(mono_mix(np.stack([audio[0], -audio[0]])), audio[0])


class _PieceRecorder:
    """A recognizer that notes what it is given and hears one word 0.2 s into each piece."""

    name = "fake"
    language = "en"

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def words(self, audio: np.ndarray, *, speaker: str) -> list[Word]:
        self.lengths.append(len(audio))
        return [Word(0.2, 0.4, f" w{len(self.lengths)}", speaker, seg=0)]


def test_long_channel_reaches_the_model_in_bounded_pieces_cut_at_a_pause() -> None:
    """A long call must not be handed to the model whole (its spectrogram alone took GBs)."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.1, 5 * SAMPLE_RATE).astype(np.float32)
    x[int(1.5 * SAMPLE_RATE): int(1.6 * SAMPLE_RATE)] = 0.0  # the only pause before the 2 s limit
    fake = _PieceRecorder()
    t = transcribe_audio(fake, x, piece_s=2.0)
    assert max(fake.lengths) <= 2 * SAMPLE_RATE
    assert sum(fake.lengths) == len(x)
    assert fake.lengths[0] == int(1.55 * SAMPLE_RATE)  # cut in the middle of the pause
    starts = [w.start for w in t.words]
    assert starts[:2] == pytest.approx([0.2, 1.55 + 0.2])  # times are back on the whole recording
    assert [w.seg for w in t.words] == sorted({w.seg for w in t.words})  # one segment per piece


def test_call_cut_into_pieces_keeps_its_words(recognizer) -> None:
    """Cuts land in pauses: the words of a 40 s call survive 12 s pieces."""
    truth = json.loads((DATA / "c01_billing_dispute.json").read_text())
    reference = " ".join(turn["text"] for turn in truth["turns"])
    audio = load_audio(DATA / "c01_billing_dispute.mono.wav")
    t = transcribe_audio(recognizer, audio, piece_s=12.0)
    assert "4719203" in normalize(t.text)
    assert wer(reference, t.text) < 0.25


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from /proc (Linux)")
def test_decoding_holds_little_more_than_the_samples(tmp_path: Path) -> None:
    """Decoded frames are not kept twice over (list of frames + joined copy) for a long call."""
    data, sr = sf.read(str(DATA / "c01_billing_dispute.stereo.wav"), always_2d=True)
    path = tmp_path / "long.wav"
    sf.write(str(path), np.concatenate([data] * 6), sr, subtype="ULAW")  # 4 minutes
    # a fresh process, and its VmHWM (ru_maxrss would carry over the forking test session's)
    probe = (
        "import re, sys\n"
        "from pathlib import Path\n"
        "import av  # noqa: F401  (FFmpeg's own memory is not the decode's)\n"
        "from cti.transcribe.audio import load_audio\n"
        "def hwm(): return int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1])\n"
        "base = hwm()\n"
        "audio = load_audio(sys.argv[1])\n"
        "print((hwm() - base) * 1024 / audio.nbytes)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert float(out.stdout) < 1.8  # was 2.2: every frame kept, then a joined copy


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"<!DOCTYPE html><html><head><title>404 Not Found</title></head></html>", "an HTML page"),
        (b'{"code": 20404, "message": "The requested resource was not found", "status": 404}', "JSON"),
        (b"", "empty file"),
    ],
)
def test_error_page_saved_as_wav_is_named_as_such(tmp_path: Path, content: bytes, why: str) -> None:
    """An expired recording URL answers with a page; the error says so, not just "invalid data"."""
    from cti.transcribe.audio import AudioError

    path = tmp_path / "recording.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=f"recording.wav: .*{why}"):
        load_audio(path)
    if content:
        with pytest.raises(AudioError, match=why):
            load_audio(content, name="recording.wav")  # decrypted bytes from the store
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path)
