"""The embedded CRM directory: contacts and accounts in our own SQL store.

Numbers are stored once normalized (one `contact_phones` row per number, E.164), so a
lookup is an indexed equality whatever people typed (`06 12 34 56 78`, `0033 6...`,
`+33.6.12...`, `... ext. 12`). `import_csv` fills it from CSV files.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cti.clock import SystemClock
from cti.crm.base import CrmError, full_name, register
from cti.crm.store import local_history, upsert_activity, upsert_stmt
from cti.model import Activity, Contact
from cti.phone import InvalidNumber, to_e164
from cti.store.db import autocommit_reads
from cti.store.tables import accounts, activities, contact_phones, contacts

log = structlog.get_logger(__name__)

CONTACT_COLUMNS = (
    "id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "mobile",
    "role",
    "account_id",
    "account_name",
    "owner",
)
ACCOUNT_COLUMNS = ("id", "name", "phone", "owner", "won_amount_24m", "tier")


def account_fields(row: Any) -> dict[str, Any]:
    f = dict(row.account_fields or {}) if getattr(row, "account_fields", None) is not None else {}
    out = {f"account.{k}": v for k, v in f.items()}
    if getattr(row, "account_name", None):
        out["account.name"] = row.account_name
    if getattr(row, "account_id", None):
        out["account.id"] = row.account_id
    return out


class LocalConnector:
    """`Connector` over the SQL directory (the embedded default)."""

    name = "local"

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        region: str = "FR",
        tenant: str = "default",
        url_template: str | None = None,
        clock: Any = None,
    ) -> None:
        self.engine = engine
        self._reads = autocommit_reads(engine)  # lookups: three reads, no transaction needed
        self.region = region
        self.tenant = tenant
        self.url_template = url_template  # e.g. "https://crm.example/contacts/{id}"
        self.clock = clock or SystemClock()

    def _url(self, kind: str, id_: str) -> str | None:
        return self.url_template.format(id=id_, kind=kind) if self.url_template else None

    async def lookup(self, e164: str) -> list[Contact]:
        c, a, p = contacts, accounts, contact_phones
        q = (
            sa.select(
                c,
                a.c.name.label("account_name"),
                a.c.fields.label("account_fields"),
                a.c.owner.label("account_owner"),
            )
            .select_from(p.join(c, c.c.id == p.c.contact_id).outerjoin(a, a.c.id == c.c.account_id))
            .where(p.c.e164 == e164, c.c.tenant == self.tenant)
            .order_by(c.c.last_name, c.c.first_name, c.c.id)
        )
        async with self._reads.connect() as conn:
            rows = (await conn.execute(q)).all()
            ids = list(dict.fromkeys(r.id for r in rows))
            phones: dict[str, list[str]] = {i: [] for i in ids}
            if ids:
                for pr in await conn.execute(
                    sa.select(p.c.contact_id, p.c.e164).where(p.c.contact_id.in_(ids)).order_by(p.c.id)
                ):
                    if pr.e164 not in phones[pr.contact_id]:
                        phones[pr.contact_id].append(pr.e164)
            acc_rows = (
                await conn.execute(sa.select(a).where(a.c.phone == e164, a.c.tenant == self.tenant).order_by(a.c.name))
            ).all()
        out: list[Contact] = []
        seen: set[str] = set()
        for r in rows:
            if r.id in seen:
                continue
            seen.add(r.id)
            fields = account_fields(r)
            fields.update({f"contact.{k}": v for k, v in (r.fields or {}).items()})
            if r.role:
                fields["contact.role"] = r.role
            out.append(
                Contact(
                    id=r.id,
                    name=full_name(r.first_name, r.last_name, r.email or r.id),
                    phones=tuple(phones[r.id]),
                    first_name=r.first_name,
                    last_name=r.last_name,
                    email=r.email,
                    role=r.role,
                    account_id=r.account_id,
                    account_name=r.account_name,
                    owner=r.owner or r.account_owner,
                    url=self._url("contact", r.id),
                    kind="contact",
                    fields=fields,
                )
            )
        matched_accounts = {m.account_id for m in out}
        for r in acc_rows:
            if r.id in matched_accounts:
                continue  # a contact of this account already answers for it
            fields = {f"account.{k}": v for k, v in (r.fields or {}).items()}
            fields.update({"account.name": r.name, "account.id": r.id})
            out.append(
                Contact(
                    id=r.id,
                    name=r.name,
                    phones=(e164,),
                    account_id=r.id,
                    account_name=r.name,
                    owner=r.owner,
                    url=self._url("account", r.id),
                    kind="account",
                    fields=fields,
                )
            )
        return out

    async def log_activity(self, activity: Activity) -> str:
        async with self.engine.begin() as conn:
            await upsert_activity(conn, activity, self.tenant, self.clock.now())
        return f"local:{activity.call_id}"

    async def log_transcript(self, call_id: str, transcript_text: str, summary: dict[str, Any] | None) -> str | None:
        async with self.engine.begin() as conn:
            await conn.execute(
                activities.update()
                .where(activities.c.call_id == call_id)
                .values(summary=summary, updated_at=self.clock.now())
            )
        return f"local:{call_id}"

    async def history(self, key: str, limit: int = 5) -> list[dict[str, Any]]:
        rows, _ = await local_history(self.engine, key, limit, tenant=self.tenant)
        return rows

    async def create_contact(
        self,
        *,
        phone: str,
        first_name: str | None = None,
        last_name: str | None = None,
        email: str | None = None,
        account_name: str | None = None,
        role: str | None = None,
        owner: str | None = None,
    ) -> Contact:
        """New contact from the pop's new-contact form. Raises CrmError naming a bad phone."""
        try:
            e164 = to_e164(phone, self.region)
        except InvalidNumber as exc:
            raise CrmError(f"phone: {exc}") from None
        cid = f"c-{uuid.uuid4().hex[:12]}"
        async with self.engine.begin() as conn:
            account_id = await _account_by_name(conn, account_name, self.tenant) if account_name else None
            await conn.execute(
                contacts.insert().values(
                    id=cid,
                    tenant=self.tenant,
                    account_id=account_id,
                    first_name=first_name,
                    last_name=last_name,
                    email=email,
                    role=role,
                    owner=owner,
                    fields={},
                )
            )
            await conn.execute(contact_phones.insert().values(contact_id=cid, e164=e164, raw=phone, label="phone"))
        return Contact(
            id=cid,
            name=full_name(first_name, last_name, e164),
            phones=(e164,),
            first_name=first_name,
            last_name=last_name,
            email=email,
            role=role,
            account_id=account_id,
            account_name=account_name,
            owner=owner,
            url=self._url("contact", cid),
        )

    async def close(self) -> None:
        return None


@register("local")
def _factory(settings: Any, *, engine: AsyncEngine, region: str, tenant: str, **_: Any) -> LocalConnector:
    return LocalConnector(engine, region=region, tenant=tenant, url_template=settings.options.get("url_template"))


def _slug(name: str) -> str:
    return "acc-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or uuid.uuid4().hex[:8])


async def _account_by_name(conn: AsyncConnection, name: str, tenant: str) -> str:
    got = (
        await conn.execute(
            sa.select(accounts.c.id).where(accounts.c.name == name, accounts.c.tenant == tenant).limit(1)
        )
    ).scalar()
    if got:
        return got
    aid = _slug(name)
    await conn.execute(
        upsert_stmt(conn, accounts, {"id": aid, "tenant": tenant, "name": name, "fields": {}}, ["id"], [])
    )
    return aid


# ---------------------------------------------------------------------------------------- import


@dataclass
class RejectedRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ImportReport:
    contacts: int = 0
    accounts: int = 0
    phones: int = 0
    errors: list[RejectedRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (
            f"imported {self.accounts} accounts, {self.contacts} contacts ({self.phones} numbers); "
            f"{len(self.errors)} rows rejected"
        )


def _clean(v: str | None) -> str | None:
    v = (v or "").strip()
    return v or None


def _read(path: Path, required: Sequence[str]) -> tuple[list[tuple[int, dict[str, str]]], str | None]:
    """Rows with their line numbers (header is line 1); an error when required columns are missing."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            return [], f"missing column(s): {', '.join(missing)}"
        reader.fieldnames = header
        rows = []
        for row in reader:
            rows.append((reader.line_num, {k: (v if isinstance(v, str) else "") for k, v in row.items() if k}))
        return rows, None


def parse_account_row(row: dict[str, str], region: str) -> dict[str, Any]:
    """Validate one accounts.csv row; ValueError names the bad column."""
    aid, name = _clean(row.get("id")), _clean(row.get("name"))
    if not aid:
        raise ValueError("id is empty")
    if not name:
        raise ValueError("name is empty")
    phone = _clean(row.get("phone"))
    e164 = None
    if phone:
        try:
            e164 = to_e164(phone, region)
        except InvalidNumber as exc:
            raise ValueError(f"phone {exc}") from None
    fields: dict[str, Any] = {}
    amount = _clean(row.get("won_amount_24m"))
    if amount:
        try:
            fields["won_amount_24m"] = float(amount.replace(" ", "").replace(",", "."))
        except ValueError:
            raise ValueError(f"won_amount_24m {amount!r} is not a number") from None
    else:
        fields["won_amount_24m"] = 0.0
    if _clean(row.get("tier")):
        fields["tier"] = _clean(row.get("tier"))
    return {"id": aid, "name": name, "phone": e164, "owner": _clean(row.get("owner")), "fields": fields}


def parse_contact_row(row: dict[str, str], region: str) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Validate one contacts.csv row -> (values, [(e164, raw, label)]); ValueError names the column."""
    cid = _clean(row.get("id"))
    if not cid:
        raise ValueError("id is empty")
    first, last = _clean(row.get("first_name")), _clean(row.get("last_name"))
    if not first and not last:
        raise ValueError("first_name and last_name are both empty")
    phones: list[tuple[str, str, str]] = []
    for label in ("phone", "mobile"):
        raw = _clean(row.get(label))
        if raw:
            try:
                e164 = to_e164(raw, region)
            except InvalidNumber as exc:
                raise ValueError(f"{label} {exc}") from None
            if e164 not in [p[0] for p in phones]:
                phones.append((e164, raw, label))
    email = _clean(row.get("email"))
    if email and "@" not in email:
        raise ValueError(f"email {email!r} is not an address")
    values = {
        "id": cid,
        "first_name": first,
        "last_name": last,
        "email": email,
        "role": _clean(row.get("role")),
        "owner": _clean(row.get("owner")),
        "account_id": _clean(row.get("account_id")),
        "account_name": _clean(row.get("account_name")),
    }
    return values, phones


async def import_csv(
    engine: AsyncEngine,
    contacts_csv_path: str | Path,
    accounts_csv_path: str | Path | None = None,
    region: str = "FR",
    *,
    tenant: str = "default",
) -> ImportReport:
    """Load accounts then contacts; re-importing the same files updates, never duplicates.

    Bad rows are reported (file, line, reason) and skipped; the good ones are imported.
    """
    report = ImportReport()
    acc_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    if accounts_csv_path is not None:
        path = Path(accounts_csv_path)
        rows, err = _read(path, ("id", "name"))
        if err:
            report.errors.append(RejectedRow(path.name, 1, err))
        for line, row in rows:
            try:
                acc = parse_account_row(row, region)
                if acc["id"] in seen:
                    raise ValueError(f"duplicate account id {acc['id']!r}")
            except ValueError as exc:
                report.errors.append(RejectedRow(path.name, line, str(exc)))
                continue
            seen.add(acc["id"])
            acc_rows.append(acc)
    cpath = Path(contacts_csv_path)
    rows, err = _read(cpath, ("id", "first_name", "last_name"))
    if err:
        report.errors.append(RejectedRow(cpath.name, 1, err))
    contact_rows: list[tuple[dict[str, Any], list[tuple[str, str, str]]]] = []
    seen_c: set[str] = set()
    for line, row in rows:
        try:
            values, phones = parse_contact_row(row, region)
            if values["id"] in seen_c:
                raise ValueError(f"duplicate contact id {values['id']!r}")
        except ValueError as exc:
            report.errors.append(RejectedRow(cpath.name, line, str(exc)))
            continue
        seen_c.add(values["id"])
        contact_rows.append((values, phones))

    async with engine.begin() as conn:
        for acc in acc_rows:
            await conn.execute(
                upsert_stmt(conn, accounts, {**acc, "tenant": tenant}, ["id"], ["name", "phone", "owner", "fields"])
            )
            report.accounts += 1
        known = set(
            (await conn.execute(sa.select(accounts.c.id, accounts.c.name).where(accounts.c.tenant == tenant))).scalars()
        )
        for values, phones in contact_rows:
            account_id, account_name = values.pop("account_id"), values.pop("account_name")
            if account_id and account_id not in known:
                # referenced but not in accounts.csv: create it from the name we have
                await conn.execute(
                    upsert_stmt(
                        conn,
                        accounts,
                        {
                            "id": account_id,
                            "tenant": tenant,
                            "name": account_name or account_id,
                            "fields": {},
                        },
                        ["id"],
                        [],
                    )
                )
                known.add(account_id)
            elif not account_id and account_name:
                account_id = await _account_by_name(conn, account_name, tenant)
                known.add(account_id)
            vals = {**values, "account_id": account_id, "tenant": tenant, "fields": {}}
            await conn.execute(
                upsert_stmt(
                    conn,
                    contacts,
                    vals,
                    ["id"],
                    ["account_id", "first_name", "last_name", "email", "role", "owner"],
                )
            )
            await conn.execute(contact_phones.delete().where(contact_phones.c.contact_id == values["id"]))
            for e164, raw, label in phones:
                await conn.execute(
                    contact_phones.insert().values(contact_id=values["id"], e164=e164, raw=raw, label=label)
                )
                report.phones += 1
            report.contacts += 1
    log.info("crm_import_done", contacts=report.contacts, accounts=report.accounts, rejected=len(report.errors))
    return report


async def count_contacts(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(contacts))).scalar() or 0)


def crm_import_main(argv: Sequence[str] | None = None) -> int:
    """`cti crm import CONTACTS.csv [--accounts ACCOUNTS.csv] [--config cti.toml] [--store-url URL]`.

    Exit status 0 when every row was imported, 1 when some rows were rejected, 2 on a usage error.
    """
    from cti.config import ConfigError, load_settings

    p = argparse.ArgumentParser(prog="cti crm import", description="Import contacts (and accounts) from CSV")
    p.add_argument(
        "contacts",
        help="contacts CSV: id,first_name,last_name,email,phone,mobile,role,account_id,account_name,owner",
    )
    p.add_argument("--accounts", help="accounts CSV: id,name,phone,owner,won_amount_24m,tier")
    p.add_argument("--config", help="cti.toml")
    p.add_argument("--store-url", help="override [store] url")
    p.add_argument("--region", help="default region for national numbers (default: [site] default_region)")
    args = p.parse_args(list(argv) if argv is not None else None)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    for f in (args.contacts, args.accounts):
        if f and not Path(f).is_file():
            print(f"error: {f}: file not found")
            return 2
    url = args.store_url or settings.store.url
    region = args.region or settings.site.default_region

    from cti.store.migrate import upgrade

    try:
        upgrade(url)  # the tables exist whatever ran before (idempotent)
    except Exception as exc:
        print(f"error: cannot prepare the store at {url}: {exc}")
        return 2

    async def run() -> ImportReport:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url)
        try:
            return await import_csv(engine, args.contacts, args.accounts, region, tenant=settings.site.tenant)
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    for e in report.errors:
        print(f"rejected {e}")
    print(report.summary())
    return 0 if report.ok else 1
