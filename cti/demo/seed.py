"""The demo world, generated deterministically: a French B2B company's call centre.

Pure functions over `random.Random(seed)`: the same seed always gives the same
accounts, contacts, agents and numbers, so the committed CSVs, the demo config
and the tests agree. Regenerate the CSVs after changing this file with

    python -m cti.demo.seed            # writes cti/demo/contacts.csv and accounts.csv

CSV columns (read by `cti crm import` / `cti.crm.local.import_csv`):

- contacts.csv: id, first_name, last_name, email, phone, mobile, role, account_id,
  account_name, owner. `phone` is the direct line, `mobile` the mobile, both as people
  type them (`06 12 34 56 78`, `+33 1 70 ...`, `0033...`, `01.70.00.00.00`); the
  importer normalizes them to E.164. `owner` is the agent id owning the account.
- accounts.csv: id, name, phone, owner, won_amount_24m (euros won over the last
  24 months, integer), tier (gold >= 50 000, silver >= 10 000, else bronze).

The demo's first contact, Camille Dubois (CEO), has the mobile +33612345678: the
number the conformance scenarios and the browser tests call from.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cti.phone import InvalidNumber, to_e164

SEED = 20260105
N_ACCOUNTS = 50
N_CONTACTS = 200
PROVIDER = "sim"
TEAMS = ("support", "sales", "billing")
CONTACT_COLUMNS = ("id", "first_name", "last_name", "email", "phone", "mobile", "role", "account_id",
                   "account_name", "owner")
ACCOUNT_COLUMNS = ("id", "name", "phone", "owner", "won_amount_24m", "tier")
DEMO_CUSTOMER = "+33612345678"

# ---- people and companies -------------------------------------------------------------

_FR_FIRST = ("Camille", "Julie", "Nicolas", "Sophie", "Thomas", "Marie", "Pierre", "Claire", "Antoine",
             "Isabelle", "Mathieu", "Nathalie", "Sébastien", "Céline", "François", "Aurélie", "Laurent",
             "Émilie", "Guillaume", "Hélène", "Olivier", "Manon", "Benoît", "Léa", "Jérôme", "Chloé",
             "Romain", "Amélie", "Vincent", "Élodie", "Yann", "Margaux", "Karim", "Fatima", "Mehdi",
             "Anaïs", "Raphaël", "Inès", "Quentin", "Gaëlle")
_FR_LAST = ("Dubois", "Lefebvre", "Moreau", "Laurent", "Simon", "Michel", "Garcia", "David", "Bertrand",
            "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert",
            "Bonnet", "François", "Martinez", "Legrand", "Garnier", "Faure", "Rousseau", "Blanc",
            "Guérin", "Muller", "Henry", "Roussel", "Nicolas", "Perrin", "Morin", "Mathieu", "Clément",
            "Gauthier", "Dumont", "Lopez", "Fontaine", "Chevalier", "Robin", "Masson", "Sanchez", "Boyer",
            "Denis", "Lemoine", "Benali", "Nguyen", "Lévêque", "Caron")
_EN_FIRST = ("James", "Emily", "Oliver", "Charlotte", "Henry", "Amelia", "George", "Sophia", "Jack",
             "Olivia", "William", "Grace", "Daniel", "Hannah", "Michael", "Lucy", "Edward", "Rachel")
_EN_LAST = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Thomas", "Johnson",
            "Roberts", "Walker", "Wright", "Robinson", "Thompson", "Hughes", "Green", "Hall", "Clarke")

_FR_FORMS = ("SARL", "SAS", "SA", "", "", "")
_FR_TRADES = ("Transports", "Boulangerie", "Imprimerie", "Menuiserie", "Cabinet", "Garage", "Laboratoires",
              "Éditions", "Pharmacie", "Ateliers", "Fromagerie", "Domaine", "Hôtel", "Agence",
              "Constructions", "Clinique", "Brasserie", "Librairie", "Optique", "Électricité")
_FR_COMPANIES = ("Groupe Vauban", "Lumière & Fils", "Mistral Énergie", "Azur Logistique", "Bretagne Marée",
                 "Alpes Matériaux", "Normandie Cidres", "Provence Santé", "Atlantique Conseil",
                 "Loire Informatique", "Pyrénées Distribution", "Gironde Vins")
_EN_COMPANIES = ("Northwind Trading Ltd", "Blue Harbour Consulting", "Kestrel Analytics",
                 "Thames Valley Freight", "Oakridge Software", "Redwood Partners LLP", "Silverline Media",
                 "Bridgewater Foods")

_ROLES_TOP = ("CEO", "CFO")
_ROLES = ("Directeur commercial", "Responsable achats", "Comptable", "Office manager", "Responsable IT",
          "Assistante de direction", "Chef de projet", "Head of Operations", "Purchasing Manager",
          "IT Manager", "Accountant", "Responsable logistique", "Gérant", "Directrice marketing")

# ---- the call centre ------------------------------------------------------------------

# (id, name, team, skills) — levels 0-10
_AGENTS: tuple[tuple[str, str, str, dict[str, int]], ...] = (
    ("alice", "Alice Martin", "support", {"language_fr": 9, "language_en": 6, "internet": 8, "billing": 3}),
    ("bob", "Bob Durand", "support", {"language_fr": 9, "internet": 9}),
    ("chloe", "Chloé Bernard", "support", {"language_fr": 8, "language_en": 4, "internet": 6, "billing": 5}),
    ("david", "David Smith", "support", {"language_en": 10, "language_fr": 5, "internet": 7}),
    ("emma", "Emma Petit", "support", {"language_fr": 7, "language_en": 8, "internet": 5}),
    ("farid", "Farid Benali", "sales", {"language_fr": 9, "language_en": 5, "sales": 9}),
    ("grace", "Grace Thompson", "sales", {"language_en": 10, "language_fr": 6, "sales": 8}),
    ("hugo", "Hugo Lefèvre", "sales", {"language_fr": 8, "sales": 7, "internet": 3}),
    ("ines", "Inès Moreau", "sales", {"language_fr": 9, "language_en": 7, "sales": 6, "billing": 4}),
    ("julien", "Julien Roux", "billing", {"language_fr": 9, "billing": 9}),
    ("karen", "Karen Walsh", "billing", {"language_en": 9, "language_fr": 6, "billing": 8}),
    ("leo", "Léo Fournier", "billing", {"language_fr": 8, "billing": 7, "internet": 4}),
)
# one supervisor per team, and one head supervisor over every team (the `demo-supervisor` token)
_SUPERVISORS = (("nadia", "Nadia Haddad", "support"), ("olivier", "Olivier Blanc", "sales"),
                ("paula", "Paula Vidal", "billing"))
HEAD_SUPERVISOR = ("sam", "Sam Girard")

_QUEUES: tuple[dict[str, Any], ...] = (
    {
        "name": "support",
        "numbers": ["+33170000100", "100"],
        "requires": "language_fr >= 5 and internet >= 5",
        "strategy": "longest_idle",
        "priority": 0,
        "ring_timeout_s": 15,
        "max_wait_s": 300,
        "overflow": {"after_s": 60, "widen": "language_fr >= 5 and internet >= 3", "then": "voicemail"},
        "script": "Bonjour {contact.first_name}, {agent.first_name} du support Arcadia, "
                  "comment puis-je vous aider ?",
        "service_level_s": 20,
        "recording": "on_demand",
        "dispositions": ["resolved", "follow_up", "escalated"],
    },
    {
        "name": "support_en",
        "numbers": ["+33170000400", "400"],
        "requires": "language_en >= 6 and internet >= 3",
        "strategy": "best_skill",
        "priority": 0,
        "ring_timeout_s": 15,
        "max_wait_s": 300,
        "script": "Hello {contact.first_name}, this is {agent.first_name} from Arcadia support. "
                  "How can I help you today?",
        "service_level_s": 30,
        "recording": "on_demand",
        "dispositions": ["resolved", "follow_up", "escalated"],
    },
    {
        "name": "sales",
        "numbers": ["+33170000200", "200"],
        "requires": "sales >= 5",
        "strategy": "fewest_calls",
        "priority": 5,
        "ring_timeout_s": 20,
        "max_wait_s": 180,
        "script": "Bonjour {contact.first_name}, {agent.first_name} de l'équipe commerciale Arcadia. "
                  "Je vois que vous appelez pour {account.name} : que puis-je faire pour vous ?",
        "service_level_s": 20,
        "recording": "on_demand",
        "preferred_agent_s": 10,
        "dispositions": ["sale", "no_sale", "follow_up", "callback_requested"],
    },
    {
        "name": "billing",
        "numbers": ["+33170000300", "300"],
        "requires": "billing >= 5 and (language_fr >= 5 or language_en >= 8)",
        "strategy": "ring_all",
        "priority": 0,
        "ring_timeout_s": 15,
        "max_wait_s": 240,
        "script": "Bonjour {contact.first_name}, {agent.first_name} du service facturation. "
                  "Pouvez-vous me donner le numéro de votre facture ?",
        "service_level_s": 30,
        "recording": "always",
        "dispositions": ["resolved", "follow_up", "refund", "cancelled"],
    },
)

_PRIORITY_RULES = (
    {"name": "vip", "when": "account.won_amount_24m >= 50000 or contact.role in ['CEO', 'CFO']", "boost": 50},
    {"name": "gold_account", "when": "account.tier == 'gold'", "boost": 20},
)

DISPOSITIONS = ["resolved", "follow_up", "escalated", "sale", "no_sale", "cancelled", "refund",
                "callback_requested", "wrong_number"]


# ---- phone numbers --------------------------------------------------------------------

def _format(nsn: str, style: int) -> str:
    """A French number (9 significant digits) the way people write it."""
    pairs = " ".join(nsn[i:i + 2] for i in range(1, 9, 2))
    national = "0" + nsn
    if style == 0:
        return f"0{nsn[0]} {pairs}"                              # 06 12 34 56 78
    if style == 1:
        return f"+33 {nsn[0]} {pairs}"                           # +33 6 12 34 56 78
    if style == 2:
        return "0033" + nsn                                      # 0033612345678
    if style == 3:
        return ".".join([national[:2], *[nsn[i:i + 2] for i in range(1, 9, 2)]])  # 06.12.34.56.78
    if style == 4:
        return "+33" + nsn                                       # +33612345678
    if style == 5:
        return national                                          # 0612345678
    return f"+33 (0){nsn[0]} {pairs}"                            # +33 (0)6 12 34 56 78


class _Numbers:
    """Draws unique, valid French numbers (never the demo queues' own numbers)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = {"+33170000100", "+33170000200", "+33170000300", "+33170000400"}

    def draw(self, kind: str) -> tuple[str, str]:
        """(as written, E.164) for a `mobile` or a `landline`."""
        while True:
            if kind == "mobile":
                nsn = self.rng.choice("67") + f"{self.rng.randrange(10**8):08d}"
            else:
                area = self.rng.choice("11112345")
                nsn = area + f"{self.rng.randrange(10**8):08d}"
                if nsn.startswith("170000"):
                    continue
            try:
                e164 = to_e164("+33" + nsn)
            except InvalidNumber:  # an unallocated range (07 1x ...): draw again
                continue
            if e164 not in self.used:
                self.used.add(e164)
                return _format(nsn, self.rng.randrange(7)), e164

    def reserve(self, e164: str) -> None:
        self.used.add(e164)


def _ascii(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower()


def _slug(s: str) -> str:
    return "".join(ch for ch in _ascii(s).replace("&", "et") if ch.isalnum() or ch == "-")


# ---- the world ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DemoWorld:
    accounts: tuple[dict[str, Any], ...]
    contacts: tuple[dict[str, Any], ...]

    def customer_numbers(self) -> list[str]:
        """Every E.164 number of the directory, sorted (what simulated callers dial from)."""
        nums = {a["phone_e164"] for a in self.accounts if a["phone_e164"]}
        for c in self.contacts:
            nums.update(n for n in (c["phone_e164"], c["mobile_e164"]) if n)
        return sorted(nums)


def _company_names(rng: random.Random) -> list[str]:
    names = list(_FR_COMPANIES) + list(_EN_COMPANIES)
    seen = set(names)
    while len(names) < N_ACCOUNTS:
        form = rng.choice(_FR_FORMS)
        name = f"{rng.choice(_FR_TRADES)} {rng.choice(_FR_LAST)}" + (f" {form}" if form else "")
        if name not in seen:
            seen.add(name)
            names.append(name)
    rng.shuffle(names)
    return names


def _amount(rng: random.Random) -> int:
    """Won amount over 24 months: most small, a long tail of big customers."""
    return int(round(rng.lognormvariate(9.6, 1.2), -2)) if rng.random() > 0.1 else 0


def tier_of(amount: float) -> str:
    return "gold" if amount >= 50_000 else "silver" if amount >= 10_000 else "bronze"


def generate_world(seed: int = SEED) -> DemoWorld:
    """50 accounts and 200 contacts; the same seed gives the same world."""
    rng = random.Random(seed)
    numbers = _Numbers(rng)
    numbers.reserve(DEMO_CUSTOMER)
    sales_owners = [a[0] for a in _AGENTS if a[2] == "sales"]
    accounts: list[dict[str, Any]] = []
    for i, name in enumerate(_company_names(rng), start=1):
        raw, e164 = numbers.draw("landline")
        amount = _amount(rng)
        accounts.append({
            "id": f"acc-{i:03d}", "name": name, "phone": raw, "phone_e164": e164,
            "owner": rng.choice(sales_owners), "won_amount_24m": amount, "tier": tier_of(amount),
            "english": name in _EN_COMPANIES,
        })
    # every account gets at least one contact; the rest are spread at random
    sizes = [1] * N_ACCOUNTS
    for _ in range(N_CONTACTS - N_ACCOUNTS):
        sizes[rng.randrange(N_ACCOUNTS)] += 1
    contacts: list[dict[str, Any]] = []
    emails: set[str] = set()
    for acc, size in zip(accounts, sizes, strict=True):
        words = [w for w in acc["name"].split() if w not in ("SARL", "SAS", "SA", "Ltd", "LLP", "&")]
        domain = _slug("-".join(words)) + (".co.uk" if acc["english"] else ".fr")
        for k in range(size):
            english = acc["english"] if rng.random() < 0.85 else not acc["english"]
            first = rng.choice(_EN_FIRST if english else _FR_FIRST)
            last = rng.choice(_EN_LAST if english else _FR_LAST)
            if k == 0 and rng.random() < 0.5:
                role = rng.choice(_ROLES_TOP)
            else:
                role = rng.choice(_ROLES)
            email = f"{_ascii(first)}.{_ascii(last)}@{domain}".replace(" ", "")
            n = 2
            while email in emails:
                email = f"{_ascii(first)}.{_ascii(last)}{n}@{domain}".replace(" ", "")
                n += 1
            emails.add(email)
            phone, phone_e164 = numbers.draw("landline") if rng.random() < 0.7 else ("", None)
            mobile, mobile_e164 = numbers.draw("mobile") if rng.random() < 0.85 or not phone else ("", None)
            contacts.append({
                "first_name": first, "last_name": last, "email": email, "phone": phone,
                "phone_e164": phone_e164, "mobile": mobile, "mobile_e164": mobile_e164, "role": role,
                "account_id": acc["id"], "account_name": acc["name"], "owner": acc["owner"],
            })
    # a stable, known first contact for scenarios and browser tests
    c0 = contacts[0]
    c0.update({"first_name": "Camille", "last_name": "Dubois", "role": "CEO", "mobile": "06 12 34 56 78",
               "mobile_e164": DEMO_CUSTOMER})
    c0["email"] = f"camille.dubois@{c0['email'].split('@')[1]}"
    for i, c in enumerate(contacts, start=1):
        c["id"] = f"ct-{i:04d}"
    for a in accounts:
        del a["english"]
    return DemoWorld(tuple(accounts), tuple({"id": c.pop("id"), **c} for c in contacts))


# ---- settings -------------------------------------------------------------------------

def demo_agents() -> list[dict[str, Any]]:
    """12 agents in 3 teams, then the 3 team supervisors and the head supervisor (no skills:
    queues never route to them; they are listed for their monitor endpoint)."""
    out = [{"id": a, "name": n, "team": t, "skills": dict(s), "endpoints": {PROVIDER: f"sim/{a}"}}
           for a, n, t, s in _AGENTS]
    for sid, name, team in _SUPERVISORS:
        out.append({"id": sid, "name": name, "team": team, "skills": {}, "endpoints": {PROVIDER: f"sim/{sid}"},
                    "monitor_endpoint": f"sim/{sid}"})
    sid, name = HEAD_SUPERVISOR
    out.append({"id": sid, "name": name, "team": "support", "skills": {},
                "endpoints": {PROVIDER: f"sim/{sid}"}, "monitor_endpoint": f"sim/{sid}"})
    return out


def agent_ids() -> list[str]:
    """The 12 call-taking agents (not the supervisors)."""
    return [a[0] for a in _AGENTS]


def demo_queues() -> list[dict[str, Any]]:
    return [dict(q) for q in _QUEUES]


def demo_tokens() -> list[dict[str, Any]]:
    """Fixed demo tokens (plain values, allowed for the demo only)."""
    tokens: list[dict[str, Any]] = [
        {"user": "admin", "role": "admin", "token": "demo-admin"},
        {"user": HEAD_SUPERVISOR[0], "role": "supervisor", "teams": list(TEAMS), "token": "demo-supervisor"},
    ]
    for sid, _, team in _SUPERVISORS:
        tokens.append({"user": sid, "role": "supervisor", "teams": [team], "token": f"demo-supervisor-{team}"})
    tokens += [{"user": a, "role": "agent", "token": f"demo-agent-{a}"} for a in agent_ids()]
    return tokens


def simulator_options(world: DemoWorld, seed: int = SEED) -> dict[str, Any]:
    """Lively but plausible traffic for 12 agents: about 60% occupancy (offered load per queue =
    rate x mean talk time: support 1.0/min x 2.25 min on 5 agents, sales 0.6 on 4, billing 0.5 on 4),
    so queues build up now and then and a few impatient callers abandon."""
    return {
        "seed": seed,
        "arrival_rate_per_min": {"support": 1.0, "support_en": 0.3, "sales": 0.6, "billing": 0.5},
        "answer_probability": 0.9,
        "answer_delay_s": [2, 7],
        "talk_time_s": [30, 240],
        "patience_s": 120,
        "hold_probability": 0.2,
        "hold_time_s": [10, 60],
        "transfer_probability": 0.05,
        "outbound_per_agent_per_hour": 2,
        "outbound_agents": agent_ids(),
        "record": True,
        "auto_answer": True,
        "customer_numbers": world.customer_numbers(),
        "unknown_caller_ratio": 0.15,
    }


def demo_settings_dict(seed: int = SEED, provider_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo configuration, shaped like the TOML file (`Settings.model_validate` accepts it).

    `provider_options` override the simulator's options (e.g. `recording_files`,
    `auto_answer=False` for browser tests, rates).
    """
    world = generate_world(seed)
    options = {**simulator_options(world, seed), **(provider_options or {})}
    return {
        "site": {"tenant": "demo", "default_region": "FR", "timezone": "Europe/Paris"},
        "auth": {"tokens": demo_tokens()},
        "providers": [{"name": PROVIDER, "type": "simulator", **options}],
        "crm": {"type": "local"},
        "agents": demo_agents(),
        "queues": demo_queues(),
        "priority_rules": [dict(r) for r in _PRIORITY_RULES],
        "dispositions": list(DISPOSITIONS),
    }


# ---- CSV ------------------------------------------------------------------------------

def _write(path: Path, columns: Iterable[str], rows: Iterable[dict[str, Any]]) -> None:
    cols = list(columns)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r[c]) for c in cols})


def write_csvs(directory: str | Path, seed: int = SEED) -> tuple[Path, Path]:
    """Write contacts.csv and accounts.csv into `directory`; returns their paths."""
    d = Path(directory)
    world = generate_world(seed)
    contacts, accounts = d / "contacts.csv", d / "accounts.csv"
    _write(contacts, CONTACT_COLUMNS, world.contacts)
    _write(accounts, ACCOUNT_COLUMNS, world.accounts)
    return contacts, accounts


def main() -> None:
    contacts, accounts = write_csvs(Path(__file__).parent)
    print(f"wrote {contacts} and {accounts}")


if __name__ == "__main__":
    main()
