"""Call summary: key points, action items, key facts, disposition, sentiment.

The default is offline and deterministic: sumy (TextRank) picks key sentences,
yake picks keywords, and small general rules find the rest:
- action items: a first-person commitment ("I'll / I will / I'm going to / we'll"
  + an action verb) or a request the other party accepts ("Can you ...?" -> "Sure");
  the owner is whoever commits; the due date is the time expression in it;
- key facts: identifiers after "order/account/ticket ... number", money, percentages,
  dates and times, quantities, product names with a model number or year;
- disposition and sentiment: weighted cue lexicons, customer's words weigh more.
NLTK's punkt data is not available here, so sentences and words are split by regex.

`summarize_llm` asks an OpenAI-compatible endpoint for the same structure instead.
Callers redact before calling either one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)

DISPOSITIONS = ("resolved", "follow_up", "escalated", "sale", "no_sale", "cancelled")
SENTIMENTS = ("positive", "neutral", "negative")
OWNERS = ("agent", "customer")


@dataclass(frozen=True, slots=True)
class ActionItem:
    owner: str  # agent | customer | unknown
    text: str
    due: str | None = None


@dataclass(slots=True)
class Summary:
    key_points: list[str] = field(default_factory=list)
    action_items: list[ActionItem] = field(default_factory=list)
    key_facts: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    disposition: str = "resolved"
    sentiment: str = "neutral"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["action_items"] = [asdict(a) for a in self.action_items]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        items = [
            ActionItem(str(a.get("owner") or "unknown"), str(a.get("text") or ""), a.get("due") or None)
            for a in d.get("action_items") or []
            if isinstance(a, dict) and a.get("text")
        ]
        disposition = d.get("disposition") if d.get("disposition") in DISPOSITIONS else "resolved"
        sentiment = d.get("sentiment") if d.get("sentiment") in SENTIMENTS else "neutral"
        return cls(
            key_points=[str(x) for x in d.get("key_points") or []],
            action_items=items,
            key_facts=[str(x) for x in d.get("key_facts") or []],
            keywords=[str(x) for x in d.get("keywords") or []],
            disposition=str(disposition),
            sentiment=str(sentiment),
        )

    def as_text(self) -> str:
        """Plain text for a CRM note."""
        lines = [f"Disposition: {self.disposition}; sentiment: {self.sentiment}."]
        if self.key_points:
            lines.append("Key points:")
            lines += [f"- {p}" for p in self.key_points]
        if self.action_items:
            lines.append("Action items:")
            lines += [f"- [{a.owner}] {a.text}" + (f" (due {a.due})" if a.due else "") for a in self.action_items]
        if self.key_facts:
            lines.append("Key facts: " + "; ".join(self.key_facts))
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Sentence:
    speaker: str
    text: str
    turn: int  # index of the speaker turn it came from


# --------------------------------------------------------------------------- splitting

_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9$€£])")
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+(?:[.,:]\d+)*")


def split_sentences(text: str) -> list[str]:
    parts = _SENT_END.split(text.strip())
    return [p.strip() for p in parts if p.strip()]


def sentences_of(segments: Sequence[Any]) -> list[Sentence]:
    """Segments (objects or dicts with speaker/text) -> sentences, consecutive turns merged."""
    out: list[Sentence] = []
    turn = -1
    last_speaker: str | None = None
    for seg in segments:
        speaker = _get(seg, "speaker") or "unknown"
        text = _get(seg, "text") or ""
        if speaker != last_speaker or speaker == "unknown":
            turn += 1
            last_speaker = speaker
        out += [Sentence(speaker, s, turn) for s in split_sentences(text)]
    return out


def _get(seg: Any, key: str) -> Any:
    return seg.get(key) if isinstance(seg, dict) else getattr(seg, key, None)


class RegexTokenizer:
    """sumy tokenizer without NLTK data."""

    def __init__(self, language: str = "english") -> None:
        self.language = language

    def to_sentences(self, paragraph: str) -> list[str]:
        return split_sentences(paragraph)

    def to_words(self, sentence: str) -> list[str]:
        return _WORD.findall(sentence)


# --------------------------------------------------------------------------- time expressions

_DAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?"
_MONTH = r"(?:january|february|march|april|may|june|july|august|september|october|november|december)"
_PART = r"(?:morning|afternoon|evening|night|lunchtime|noon)"
_NUM = r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|thirty|a|an|a\s+couple\s+of|a\s+few)"
_CLOCK = r"\d{1,2}(?::\d\d)?\s*(?:[ap]\.?\s?m\.?)|\d{1,2}:\d\d|noon|midday|midnight"
_TIME_EXPR = re.compile(
    r"\b(?:(?:by|before|until|till|on|at|for|no\s+later\s+than|first\s+thing)\s+)?(?:"
    rf"(?:this|next|coming|later\s+this|the\s+following)\s+(?:{_DAY}|week|weekend|month|year|quarter|{_PART})"
    rf"(?:\s+{_PART})?"
    rf"|{_DAY}(?:\s*,?\s*{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?)?(?:\s+{_PART})?"
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?"
    rf"|the\s+\d{{1,2}}(?:st|nd|rd|th)"
    rf"|today|tonight|tomorrow(?:\s+{_PART})?|right\s+now|now|right\s+away|immediately|asap|shortly"
    r"|(?:the\s+)?end\s+of\s+(?:the\s+)?(?:day|week|month|business\s+day)|eod"
    rf"|(?:within|in)\s+(?:the\s+next\s+)?{_NUM}\s+(?:business\s+|working\s+)?"
    r"(?:minutes?|hours?|days?|weeks?|months?)"
    r"|the\s+day\s+before|the\s+day\s+after|the\s+same\s+day|later\s+today"
    rf"|{_CLOCK}"
    r")\b",
    re.IGNORECASE,
)
_LEADING_PREP = re.compile(r"^(?:by|before|until|till|on|for|no\s+later\s+than)\s+", re.IGNORECASE)


def find_due(text: str) -> str | None:
    """The time expression of a sentence ("by Friday" -> "Friday"; adjacent parts joined)."""
    matches = list(_TIME_EXPR.finditer(text))
    if not matches:
        return None
    # join neighbours: "tomorrow" + "at 10 am", "next Tuesday" + "afternoon"
    groups: list[tuple[int, int]] = []
    for m in matches:
        if groups and re.fullmatch(r"[\s,]*(?:at|,)?[\s,]*", text[groups[-1][1]: m.start()]):
            groups[-1] = (groups[-1][0], m.end())
        else:
            groups.append((m.start(), m.end()))
    start, end = max(groups, key=lambda g: g[1] - g[0])
    due = _LEADING_PREP.sub("", text[start:end].strip(" ,"))
    return due or None


# --------------------------------------------------------------------------- action items

_COMMIT = re.compile(
    r"\b(?:I|we)\s*(?:'ll|\s+will|\s+shall|'m\s+going\s+to|\s+am\s+going\s+to|'re\s+going\s+to|\s+are\s+going\s+to"
    r"|'m\s+gonna)\s+(?:also\s+|personally\s+|then\s+|just\s+|definitely\s+)?(?P<verb>[a-z]+)(?P<rest>[^.!?;]*)",
    re.IGNORECASE,
)
# present progressive commitments count only with an explicit time ("I'm raising a refund request now")
_PROGRESSIVE = re.compile(
    r"\b(?:I|we)\s*(?:'m|\s+am|'re|\s+are)\s+(?P<verb>[a-z]+ing)(?P<rest>[^.!?;]*)", re.IGNORECASE
)
_REQUEST = re.compile(
    # a short lead-in is allowed: "Yes, please ...", "Thanks, could you ...", and ASR's run-ons
    # ("Will do, could you ..." heard as "We'll do could you ...")
    r"^(?:[\w']+,?\s+){0,3}?(?:(?:can|could|would|will)\s+you(?:\s+please)?|(?P<imperative>please|make\s+sure"
    r"|don't\s+forget\s+to|remember\s+to))\s+(?P<verb>[a-z]+)(?P<rest>[^.!?]*)",
    re.IGNORECASE,
)
_ACCEPT = re.compile(
    r"^(?:sure|of\s+course|will\s+do|certainly|absolutely|no\s+problem|okay|ok|yes|yeah|definitely|i\s+will"
    r"|i'll\s+do\s+that|consider\s+it\s+done)\b",
    re.IGNORECASE,
)
_DONE = re.compile(r"\b(?:done|did\s+it|finished|it's\s+(?:green|working|fixed))\b", re.IGNORECASE)
_PRONOUN_OBJECT = re.compile(r"^\s*(?:it|that|this|them|so|those|these)(?:\s+(?:note|one|request))?\b", re.I)
# verbs after "I'll" that state, feel or describe rather than commit to doing something
_NOT_ACTION = {
    "be", "have", "need", "want", "like", "love", "see", "think", "hope", "guess", "try", "wait", "take",
    "miss", "bet", "say", "tell", "admit", "pass", "hold", "stay", "go", "let", "get", "do", "manage", "wish",
    "look", "sit",
}
_PROGRESSIVE_NOT_ACTION = {"calling", "looking", "sorry", "having", "getting", "going", "trying", "seeing",
                           "speaking", "waiting", "wondering", "thinking", "hoping", "glad", "afraid",
                           "checking", "reading", "working", "still", "just", "happy"}


def _other(speaker: str) -> str:
    return {"agent": "customer", "customer": "agent"}.get(speaker, "unknown")


def _phrase(verb: str, rest: str, owner: str, *, requested: bool = False) -> str:
    """Commitment -> imperative text: 'email you the quote by Friday' -> 'Email the customer the quote'.

    `requested`: the words are the other party's request, so "me/my" is the requester.
    """
    rest = _TIME_EXPR.sub("", rest)
    words = f"{verb}{rest}".strip(" ,")
    if requested and owner in OWNERS:
        other = _other(owner)
        words = re.sub(r"\b(?:me|us)\b", f"the {other}", words, flags=re.I)
        words = re.sub(r"\b(?:my|our)\b", f"the {other}'s", words, flags=re.I)
        words = re.sub(r"\byour\b", "the", words, flags=re.I)
        words = re.sub(r"\byou\b", "", words, flags=re.I)
    elif owner == "agent":
        words = re.sub(r"\byou(?:rs)?\b", "the customer", words, flags=re.I)
        words = re.sub(r"\byour\b", "the customer's", words, flags=re.I)
    elif owner == "customer":
        words = re.sub(r"\byou\b", "the agent", words, flags=re.I)
    words = re.sub(r"\s+", " ", words).strip(" ,")
    words = re.sub(r"\s*(?:,|\band)$", "", words)
    return words[:1].upper() + words[1:]


_CLAUSE_SPLIT = re.compile(r",?\s+(?:and|then|but|so)\s+(?=(?:I|we)\b)|;\s*", re.IGNORECASE)


def _commitments(sent: Sentence) -> list[tuple[str, str, str | None]]:
    """(verb, rest, due) for each first-person commitment in the sentence."""
    out = []
    # "I'll add that note, and I'll text you the link this afternoon": two commitments, two dues
    for clause in _CLAUSE_SPLIT.split(sent.text):
        for m in _COMMIT.finditer(clause):
            verb = m.group("verb").lower()
            rest = m.group("rest")
            if verb in _NOT_ACTION or verb in ("also", "not", "never"):
                continue
            if verb == "keep" and not rest.strip():
                continue
            out.append((verb, rest, find_due(m.group(0))))
        for m in _PROGRESSIVE.finditer(clause):
            verb = m.group("verb").lower()
            due = find_due(m.group("rest"))
            if verb in _PROGRESSIVE_NOT_ACTION or due is None:
                continue
            out.append((verb, m.group("rest"), due))
    return out


# verbs a call's follow-up is made of; used to undo "-ing" without a dictionary download
_VERBS = set("""
activate add arrange ask book bring call cancel change charge chase check close collect confirm contact copy
create credit deactivate deliver discuss dispatch email escalate fill fix follow forward get give install
investigate issue keep leave look mail make move note notify open order organise organize pay phone pick place
post prepare process put raise refund register reissue remove renew replace reply reschedule reset resend restart
return review ring schedule send set ship sign submit switch talk text track transfer update upgrade upload
verify visit waive write
""".split())


def _base_verb(verb: str) -> str:
    """raising -> raise, adding -> add, shipping -> ship, emailing -> email."""
    if not verb.endswith("ing") or len(verb) < 5:
        return verb
    stem = verb[:-3]
    candidates = [stem, stem + "e"]
    if len(stem) >= 2 and stem[-1] == stem[-2]:
        candidates.append(stem[:-1])
    for c in candidates:
        if c in _VERBS:
            return c
    if len(stem) >= 2 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
        return stem[:-1]
    if re.search(r"[^aeiou][aeiou][bcdgkmnprstvz]$", stem) and not re.search(r"(?:en|er|on|it|et)$", stem):
        return stem + "e"
    return stem


def extract_action_items(sentences: list[Sentence]) -> list[ActionItem]:
    items: list[ActionItem] = []
    used_requests: set[int] = set()
    for i, s in enumerate(sentences):
        owner = s.speaker
        for verb, rest, due in _commitments(s):
            verb = _base_verb(verb)
            text = _phrase(verb, rest, owner)
            # "I'll send it this afternoon" / "I'll add that note": the content is the other
            # party's request just before; fold it in so one task is one item
            req = _last_request(sentences, i, owner)
            if req is not None and _PRONOUN_OBJECT.match(rest):
                used_requests.add(req)
                rm = _REQUEST.search(sentences[req].text)
                assert rm is not None
                req_text = _phrase(rm.group("verb").lower(), rm.group("rest"), owner, requested=True)
                text = f"{text}: {req_text[:1].lower() + req_text[1:]}" if verb not in rm.group("verb").lower() \
                    else req_text
                due = due or find_due(sentences[req].text)
            elif req is not None and _accepted(sentences, req, owner):
                used_requests.add(req)  # "Can you send both options?" "Sure. I'll email the quote."
            items.append(ActionItem(owner if owner in OWNERS else "unknown", text, due))
    # requests the other party accepted but did not restate as their own commitment
    for i, s in enumerate(sentences):
        if i in used_requests:
            continue
        m = _REQUEST.search(s.text)
        if not m:
            continue
        owner = _other(s.speaker)
        reply = _reply(sentences, i)
        is_imperative = m.group("imperative") is not None
        if reply is not None and _DONE.search(reply.text):
            continue  # done during the call: not an action item
        if (reply is not None and _ACCEPT.match(reply.text)) or (is_imperative and reply is not None):
            verb = m.group("verb").lower()
            due = find_due(s.text) or (find_due(reply.text) if reply else None)
            items.append(ActionItem(owner, _phrase(verb, m.group("rest"), owner, requested=True), due))
    return _dedupe(items)


def _reply(sentences: list[Sentence], i: int) -> Sentence | None:
    for s in sentences[i + 1:]:
        if s.speaker != sentences[i].speaker or s.speaker == "unknown":
            return s
    return None


def _last_request(sentences: list[Sentence], i: int, owner: str) -> int | None:
    """Index of the other party's request in the turn just before sentence i (if any)."""
    turn = sentences[i].turn
    for j in range(i - 1, -1, -1):
        s = sentences[j]
        if s.turn < turn - 1:
            break
        if s.speaker != owner and _REQUEST.search(s.text):
            return j
    return None


def _accepted(sentences: list[Sentence], req: int, owner: str) -> bool:
    reply = _reply(sentences, req)
    return reply is not None and reply.speaker == owner


def _dedupe(items: list[ActionItem]) -> list[ActionItem]:
    out: list[ActionItem] = []
    seen: set[tuple[str, str]] = set()
    for it in items:
        key = (it.owner, it.text.lower())
        if key not in seen:
            seen.add(key)
            out.append(it)
    return out


# --------------------------------------------------------------------------- key facts

_ID_WORDS = (r"order|account|ticket|case|invoice|reference|confirmation|policy|member|customer|tracking"
             r"|booking|reservation|claim|serial|contract|membership|incident|quote")
_ID_FACT = re.compile(
    rf"\b(?P<label>{_ID_WORDS})(?:\s+(?:number|no\.?|id|#|code))?(?:\s+(?:is|was|will\s+be))?[\s:#]*"
    r"(?P<value>[A-Z]{0,3}-?\d[\d-]{2,}\d)\b",
    re.IGNORECASE,
)
_ASK_ID = re.compile(
    rf"\b(?P<label>{_ID_WORDS})(?:\s+(?P<kind>number|no\.?|id|code|reference))?\b", re.IGNORECASE
)
_BARE_NUMBER = re.compile(r"\b(?P<value>\d[\d-]{3,}\d)\b")
_MONEY = re.compile(
    r"(?:[$€£]\s?\d[\d,]*(?:\.\d{1,2})?(?:\s?(?:k|million|thousand))?|\b\d[\d,]*(?:\.\d{1,2})?\s(?:dollars|euros|pounds))"
    r"(?:\s+(?:a|per)\s+(?:year|month|week|user|seat|license|hour))?"
    r"(?:\s+(?:credit|refund|discount|fee|deposit|charge))?",
    re.IGNORECASE,
)
_PERCENT = re.compile(r"\b\d+(?:\.\d+)?\s?(?:%|percent)(?:\s+(?:off|discount))?", re.IGNORECASE)
_DATE = re.compile(
    rf"\b(?:{_DAY}\s*,?\s*)?{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:\s*,?\s*\d{{4}})?"
    rf"(?:\s+at\s+(?:{_CLOCK}))?|\b{_DAY}\s+at\s+(?:{_CLOCK})|\btomorrow\s+at\s+(?:{_CLOCK})",
    re.IGNORECASE,
)
_QUANTITY = re.compile(r"(?<![:\d.,$])\b(?P<n>\d[\d,]*)\s+(?P<noun>[a-z]{3,}s)\b", re.IGNORECASE)
_PRODUCT = re.compile(
    r"\b(?:(?:19|20)\d\d\s+(?:[A-Z][\w-]+\s+){0,2}[A-Z][\w-]+|(?:[A-Z][\w-]+\s+){1,3}\d{2,5}(?:\s+[a-z]+)?)\b"
)
_DURATION = re.compile(
    r"\b(?:within|in)\s+(?:\d+|one|two|three|four|five|six|seven|ten)\s+(?:business\s+|working\s+)?"
    r"(?:days?|weeks?|hours?)\b",
    re.IGNORECASE,
)
_QUANTITY_SKIP = {"seconds", "minutes", "hours", "days", "weeks", "months", "years", "times", "dollars",
                  "euros", "pounds", "cents", "percent", "things", "others", "options"}


def _join_cents(text: str) -> str:
    """One amount said in two parts is one fact: "$86 and $0.40" / "86 dollars and 40 cents" -> "$86.40"."""
    text = re.sub(r"\$(\d[\d,]*) and \$0?\.(\d\d)\b", r"$\1.\2", text)
    return re.sub(r"\b(\d[\d,]*) dollars?,? and (\d{1,2}) cents?\b",
                  lambda m: f"${m.group(1)}.{int(m.group(2)):02d}", text, flags=re.I)


def extract_key_facts(sentences: list[Sentence]) -> list[str]:
    facts: list[str] = []
    pending_label: str | None = None
    for s in sentences:
        text = _join_cents(s.text)
        got_id = False
        for m in _ID_FACT.finditer(text):
            facts.append(f"{m.group('label').lower()} {_digits(m.group('value'))}")
            got_id = True
        # "What's the order number?" ... "It's 58213."
        if pending_label and not got_id:
            bm = _BARE_NUMBER.search(text)
            if bm:
                facts.append(f"{pending_label} {_digits(bm.group('value'))}")
                pending_label = None
        ask = _ASK_ID.search(text)
        if ask and not got_id and (ask.group("kind") or ask.group("label").lower() == "reference") and (
            "?" in text or re.search(r"\b(?:can|could|may) i (?:have|get|take)\b", text, re.I)
        ):
            kind = (ask.group("kind") or "").lower().rstrip(".")
            label = ask.group("label").lower()
            pending_label = label if label == "reference" else f"{label} {kind if kind != 'no' else 'number'}"
        for rx in (_MONEY, _DATE, _DURATION):
            facts += [m.group(0).strip(" ,") for m in rx.finditer(text)]
        for m in _PERCENT.finditer(text):
            # "10 percent off" is a discount: say so, whatever words were used
            fact = re.sub(r"\s+off$", " discount", m.group(0).strip(), flags=re.I)
            facts.append(fact)
        for m in _QUANTITY.finditer(text):
            noun = m.group("noun").split()[-1].lower()
            # "at 830 works for me" is a time, not a count of works
            if noun not in _QUANTITY_SKIP and not re.search(r"\bat\s*$", text[: m.start()], re.I):
                facts.append(m.group(0))
        for m in _PRODUCT.finditer(text):
            name = _LEADING_COMMON.sub("", m.group(0)).strip()
            if re.search(r"[A-Z]", name) and not _MONEY.fullmatch(name):
                facts.append(name)
    return _unique_contained([f.rstrip(".") for f in facts])


# capitalized only because they start a sentence: not part of a product name
_LEADING_COMMON = re.compile(
    r"^(?:(?:my|our|your|the|a|an|with|for|and|it|its|it's|this|that|is|we|i|on|in|at|yes|no|so|about|from)\s+)+",
    re.IGNORECASE,
)


def _digits(value: str) -> str:
    """ "5-8-2-1-3" (digits read one by one) -> "58213"; "555-0142" stays."""
    return value.replace("-", "") if re.fullmatch(r"\d(?:-\d)+", value) else value


def _unique_contained(facts: list[str]) -> list[str]:
    """Drop exact duplicates and facts contained in a longer one ("March 3rd" in "Monday, March 3rd")."""
    cleaned = [re.sub(r"\s+", " ", f).strip() for f in facts if f.strip()]
    out: list[str] = []
    for f in cleaned:
        low = f.lower()
        if any(low != g.lower() and low in g.lower() for g in cleaned):
            continue
        if low not in (g.lower() for g in out):
            out.append(f)
    return out


# --------------------------------------------------------------------------- disposition, sentiment

_DISPOSITION_CUES: dict[str, list[str]] = {
    "cancelled": [r"\bcancel(?:led|ling|lation)?\b", r"\bclose (?:my|the|our) account\b", r"\bterminate\b",
                  r"\bend (?:my|our|the) (?:subscription|contract|plan)\b", r"\bunsubscribe\b"],
    "escalated": [r"\bescalat\w*", r"\bsupervisor\b", r"\b(?:speak|talk) to (?:a|the|your) manager\b",
                  r"\btransfer(?:ring)? you to\b", r"\bsecond[- ]level\b", r"\bspecialist team\b",
                  r"\bformal complaint\b"],
    "sale": [r"\blet'?s (?:renew|go ahead|do it|proceed|sign|order|buy|upgrade)\b",
             r"\b(?:i|we)(?:'ll| will) take (?:it|them|the|that)\b", r"\bsign (?:me|us) up\b",
             r"\bplace (?:the|an|my|our) order\b", r"\bgo ahead with\b", r"\border (?:is )?confirmed\b",
             r"\b(?:i|we)(?:'d| would) like to (?:buy|order|purchase|upgrade|renew|subscribe)\b",
             r"\bpurchase (?:is )?(?:complete|confirmed)\b", r"\brenew(?:al)? (?:is )?confirmed\b"],
    "no_sale": [r"\bnot interested\b", r"\bno,? thanks?\b", r"\bwe'?ll pass\b", r"\bgo(?:ing)? with another\b",
                r"\bdecided not to\b", r"\bnot (?:buy|order|renew)\w*\b", r"\bcan'?t afford\b"],
    "follow_up": [r"\bfollow(?:ing)?[- ]up\b", r"\bcall (?:you|me) back\b", r"\b(?:i|we)(?:'ll| will) call you\b",
                  r"\bget back to (?:you|me)\b", r"\blet (?:you|me) know\b", r"\bto discuss\b",
                  r"\breview (?:it|the|this)\b", r"\bthink (?:it )?over\b", r"\bcheck back\b",
                  r"\bmake sure it'?s (?:stable|working|fixed)\b", r"\bnext week\b", r"\bschedule a call\b"],
    "resolved": [r"\brefund\w*\b", r"\bcredit\b", r"\bfixed\b", r"\bresolved\b", r"\bsorted\b",
                 r"\ball set\b", r"\bthat'?s all\b", r"\bbooked\b", r"\bworks now\b", r"\bconfirmed\b"],
}
_DISPOSITION_ORDER = ("cancelled", "escalated", "sale", "no_sale", "follow_up", "resolved")

_POSITIVE = {"great": 1.0, "perfect": 1.0, "excellent": 1.0, "wonderful": 1.0, "awesome": 1.0, "fantastic": 1.0,
             "love": 1.0, "appreciate": 1.0, "helpful": 1.0, "happy": 1.0, "pleased": 1.0, "glad": 0.75,
             "works": 0.75, "brilliant": 1.0, "amazing": 1.0, "thanks": 0.25, "thank": 0.25, "good": 0.25,
             "nice": 0.5, "lovely": 1.0, "relieved": 0.75, "help": 0.25}
_NEGATIVE = {"still": 1.0, "late": 1.0, "nothing": 0.75, "twice": 0.75, "wrong": 1.0, "broken": 1.0,
             "frustrated": 1.5, "frustrating": 1.5, "annoyed": 1.5, "angry": 1.5, "upset": 1.5,
             "disappointed": 1.5, "unacceptable": 2.0, "terrible": 2.0, "awful": 2.0, "ridiculous": 2.0,
             "worst": 2.0, "complaint": 1.0, "waste": 1.0, "again": 0.5, "never": 0.75, "useless": 2.0,
             "problem": 0.5, "overcharged": 1.0, "delay": 0.75, "delayed": 0.75, "hasn't": 0.5,
             "haven't": 0.25, "cancel": 0.5, "impossible": 1.0, "rude": 2.0}
_NEGATORS = {"not", "no", "never", "isn't", "wasn't", "don't", "didn't", "aren't", "hardly"}


def detect_disposition(sentences: list[Sentence], items: list[ActionItem]) -> str:
    text = " ".join(s.text for s in sentences).lower()
    customer_text = " ".join(s.text for s in sentences if s.speaker != "agent").lower()
    scores = {d: 0.0 for d in DISPOSITIONS}
    for d, cues in _DISPOSITION_CUES.items():
        src = customer_text if d in ("sale", "no_sale", "cancelled") else text
        scores[d] = sum(len(re.findall(c, src)) for c in cues)
    if scores["cancelled"] and re.search(r"\b(?:don'?t|not|no need to) cancel\b", text):
        scores["cancelled"] = 0
    # an open task due after the call, by someone who will talk to the other again, is a follow-up
    callbacks = [a for a in items if re.match(r"(?:call|meet|discuss|review|visit)\b", a.text, re.I)]
    scores["follow_up"] += 2 * len(callbacks)
    for d in _DISPOSITION_ORDER[:4]:
        if scores[d] > 0:
            return d
    if scores["follow_up"] >= 2 and scores["follow_up"] >= scores["resolved"]:
        return "follow_up"
    return "resolved"


def detect_sentiment(sentences: list[Sentence]) -> str:
    """Lexicon score over the customer's words (everyone's when speakers are unknown)."""
    own = [s for s in sentences if s.speaker == "customer"] or [s for s in sentences if s.speaker != "agent"]
    score = 0.0
    for s in own:
        words = re.findall(r"[a-z]+(?:'[a-z]+)?", s.text.lower())
        for i, w in enumerate(words):
            neg = any(x in _NEGATORS for x in words[max(0, i - 2): i])
            if w in _POSITIVE:
                score += -_POSITIVE[w] if neg else _POSITIVE[w]
            elif w in _NEGATIVE and w != "never":
                score += 0.5 * _NEGATIVE[w] if neg else -_NEGATIVE[w]
    if score >= 0.75:
        return "positive"
    if score <= -1.5:
        return "negative"
    return "neutral"


# --------------------------------------------------------------------------- key points, keywords

_SUMY_LANG = {"en": "english", "fr": "french", "de": "german", "es": "spanish", "it": "italian"}


def key_points(sentences: list[Sentence], *, language: str = "en", count: int = 3) -> list[str]:
    informative = [s for s in sentences if len(_WORD.findall(s.text)) >= 4]
    if not informative:
        return []
    if len(informative) <= count:
        chosen = informative
    else:
        from sumy.nlp.stemmers import Stemmer
        from sumy.parsers.plaintext import PlaintextParser
        from sumy.summarizers.text_rank import TextRankSummarizer
        from sumy.utils import get_stop_words

        lang = _SUMY_LANG.get(language, "english")
        doc = PlaintextParser("\n".join(s.text for s in informative), RegexTokenizer(lang)).document
        summarizer = TextRankSummarizer(Stemmer(lang))
        try:
            summarizer.stop_words = get_stop_words(lang)
        except LookupError:
            pass
        picked = {_squash(str(x)) for x in summarizer(doc, count)}
        chosen = [s for s in informative if _squash(s.text) in picked][:count]
        if len(chosen) < count:
            # sumy drops lines it takes for headings; fill up with the most wordy sentences
            rest = sorted((s for s in informative if s not in chosen), key=lambda s: -len(_WORD.findall(s.text)))
            chosen += rest[: count - len(chosen)]
            chosen.sort(key=informative.index)
    return [f"{s.speaker.capitalize()}: {s.text}" if s.speaker != "unknown" else s.text for s in chosen]


def _squash(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def keywords(text: str, *, language: str = "en", top: int = 5) -> list[str]:
    if len(text.split()) < 5:
        return []
    import yake

    extractor = yake.KeywordExtractor(lan=language, n=2, top=top, dedup_lim=0.7)
    return [k for k, _score in extractor.extract_keywords(text)]


# --------------------------------------------------------------------------- entry points


def summarize(segments: Iterable[Any], *, language: str = "en") -> Summary:
    """Extractive, offline summary of (already redacted) speaker segments."""
    sentences = sentences_of(list(segments))
    if not sentences:
        return Summary(disposition="resolved", sentiment="neutral")
    items = extract_action_items(sentences)
    text = " ".join(s.text for s in sentences)
    return Summary(
        key_points=key_points(sentences, language=language),
        action_items=items,
        key_facts=extract_key_facts(sentences),
        keywords=keywords(text, language=language),
        disposition=detect_disposition(sentences, items),
        sentiment=detect_sentiment(sentences),
    )


class SummaryError(RuntimeError):
    """The summary backend failed or answered something unusable."""


_LLM_PROMPT = (
    "You summarize a phone call between a company agent and a customer. Answer with one JSON object and "
    "nothing else, with keys: key_points (list of short strings), action_items (list of objects with owner "
    "= 'agent' or 'customer', text, due = time expression or null), key_facts (list of strings: order/account "
    "numbers, amounts, dates), disposition (one of " + ", ".join(DISPOSITIONS) + "), sentiment (one of "
    + ", ".join(SENTIMENTS) + ", the customer's)."
)


async def summarize_llm(
    segments: Iterable[Any],
    *,
    base_url: str,
    model: str,
    api_key: str | None = None,
    timeout_s: float = 60.0,
    session: Any = None,
) -> Summary:
    """Same structure from an OpenAI-compatible chat endpoint (segments must be redacted already)."""
    import aiohttp

    lines = [f"{_get(s, 'speaker') or 'unknown'}: {_get(s, 'text') or ''}" for s in segments]
    body = {
        "model": model,
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [{"role": "system", "content": _LLM_PROMPT}, {"role": "user", "content": "\n".join(lines)}],
    }
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = base_url.rstrip("/") + "/chat/completions"
    own = session is None
    sess = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
    try:
        async with sess.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                raise SummaryError(f"summary endpoint {url} answered HTTP {resp.status}")
            payload = await resp.json(content_type=None)
    except aiohttp.ClientError as exc:
        raise SummaryError(f"summary endpoint {url} unreachable: {exc}") from None
    finally:
        if own:
            await sess.close()
    try:
        content = payload["choices"][0]["message"]["content"]
        content = re.sub(r"^```(?:json)?\s*|\s*```$", "", content.strip())
        data = json.loads(content)
    except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise SummaryError(f"summary endpoint {url} returned no JSON summary ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise SummaryError(f"summary endpoint {url} returned {type(data).__name__}, not an object")
    return Summary.from_dict(data)
