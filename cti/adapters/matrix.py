"""The capability matrix of every provider adapter, generated from their declarations.

`python -m cti.adapters.matrix` prints the Markdown table the README shows; a test
checks the README still matches, so the table cannot drift from the code.
"""

from __future__ import annotations

from cti.adapters.base import Capability, adapter_class, known_types

ROWS: list[tuple[str, tuple[Capability, ...]]] = [
    ("route a waiting call to agents (connect)", (Capability.CONNECT,)),
    ("answer from the panel", (Capability.ANSWER,)),
    ("click-to-call (originate)", (Capability.ORIGINATE,)),
    ("hang up", (Capability.HANGUP,)),
    ("hold / unhold", (Capability.HOLD,)),
    ("blind transfer", (Capability.BLIND_TRANSFER,)),
    ("attended transfer", (Capability.ATTENDED_TRANSFER,)),
    ("record start/stop", (Capability.RECORD,)),
    ("record pause/resume", (Capability.RECORD_PAUSE,)),
    ("play media", (Capability.PLAY,)),
    ("voicemail drop", (Capability.VOICEMAIL_DROP,)),
    ("monitor: listen", (Capability.MONITOR_LISTEN,)),
    ("monitor: whisper", (Capability.MONITOR_WHISPER,)),
    ("monitor: barge", (Capability.MONITOR_BARGE,)),
    ("take over", (Capability.TAKEOVER,)),
    ("send DTMF", (Capability.DTMF,)),
]

ORDER = ["asterisk", "freeswitch", "twilio", "sip", "simulator"]


def capability_matrix() -> str:
    types = [t for t in ORDER if t in known_types()] + [t for t in known_types() if t not in ORDER]
    caps = {t: adapter_class(t).capabilities for t in types}
    lines = ["| command | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
    for label, needed in ROWS:
        cells = ["yes" if all(c in caps[t] for c in needed) else "—" for t in types]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(capability_matrix())
