"""`cti` command line: serve | demo | worker | transcribe | migrate | stats | crm import."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from cti.config import ConfigError, Settings, load_settings
from cti.diagnostics import install_snapshot_signal


def configure_logging(level: str = "info") -> None:
    """structlog: JSON lines when stdout is not a terminal, readable console otherwise."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_secrets,  # after format_exc_info: tracebacks are scrubbed too
    ]
    renderer = (structlog.dev.ConsoleRenderer(colors=False) if sys.stderr.isatty()
                else structlog.processors.JSONRenderer())
    from cti.security.logs import protect_stdlib_loggers

    protect_stdlib_loggers()  # aiohttp's access log would print /ws?token=...
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _redact_secrets(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Secrets never reach the logs, whoever passed them (fields by name, URL passwords, tokens)."""
    from cti.security.logs import redact_event

    return redact_event(logger, name, event)


def _fail(message: str, code: int = 2) -> int:
    print(f"cti: {message}", file=sys.stderr)
    return code


def _load(path: str | None) -> Settings:
    return load_settings(path)


def _validate_routing(settings: Settings) -> list[str]:
    try:
        from cti.routing.queues import validate_routing_config
    except ImportError:
        return []
    return validate_routing_config(settings)


def loop_factory(choice: str) -> Any:
    """The event loop factory `server.event_loop` names (None: asyncio's default loop)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("server.event_loop = 'uvloop' but uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


class ListenError(Exception):
    """The server could not open its port: one line for the user, not a traceback."""


async def _serve(app: Any, host: str, port: int, duration: float | None, on_ready: Any = None) -> None:
    from aiohttp import web

    await app.start()
    # long-lived start-up objects leave the GC's view: no full collection pauses on them later
    gc.collect()
    gc.freeze()
    runner = web.AppRunner(app.web_app, handle_signals=False, shutdown_timeout=app.settings.server.shutdown_grace_s)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:  # the port is taken (another cti?) or the address is not this machine's
        await app.stop()
        await runner.cleanup()
        reason = exc.strerror or exc
        raise ListenError(f"cannot listen on {host}:{port}: {reason} (choose another with --port)") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(app.reload()))
    with contextlib.suppress(NotImplementedError, AttributeError):
        install_snapshot_signal(loop)
    if on_ready is not None:
        await on_ready(app)
    try:
        if duration is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
        else:
            await stop.wait()
    finally:
        await app.stop()
        await runner.cleanup()


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = _load(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    errors = _validate_routing(settings)
    if errors:
        return _fail(f"{args.config}: " + "; ".join(errors))
    from cti.app import CtiApp

    if not settings.server.store_writers and settings.bus.url.startswith("memory"):
        return _fail(f"{args.config}: server.store_writers = false needs a shared bus (bus.url = redis://...) "
                     "and a `cti worker --store`: with the memory bus nothing would write calls to the store")
    migrate = settings.store.url.startswith("sqlite")
    problem = _schema_problem(settings)
    if problem:
        return _fail(f"{args.config}: {problem}")
    configure_logging(args.log_level or "info")
    roles = ("gateway", "store") if settings.server.store_writers else ("gateway",)
    app = CtiApp(settings, migrate=migrate, roles=roles)
    app.config_path = args.config
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    try:
        return _run_on_configured_loop(args.config, settings, lambda: _serve(app, host, port, None))
    except ListenError as exc:
        return _fail(str(exc), 1)


def _schema_problem(settings: Any) -> str | None:
    """A shared database (PostgreSQL) is migrated by `cti migrate`, never by a starting node:
    one that is not at this version's schema stops the start with a line saying so."""
    if settings.store.url.startswith("sqlite"):
        return None
    from cti.store.migrate import schema_problem

    return asyncio.run(schema_problem(settings.store.url))


def _run_on_configured_loop(config: Any, settings: Any, main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run `main()` on the event loop `server.event_loop` names (a missing uvloop is a clear error)."""
    try:
        factory = loop_factory(settings.server.event_loop)
    except ConfigError as exc:
        return _fail(f"{config}: {exc}")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    try:
        settings = _load(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    from cti.app import CtiApp

    roles = (("worker",) if settings.transcribe.enabled else ()) + (("store",) if args.store else ())
    if not roles:
        return _fail(f"{args.config}: transcribe.enabled is false and --store is not given: nothing for a worker to do")
    if settings.bus.url.startswith("memory"):
        # the memory bus lives inside one process: a separate worker would wait forever
        what = "--store" if args.store else "a worker"
        return _fail(f"{args.config}: {what} needs the bus the gateways use (bus.url = redis://...), not memory://")
    problem = _schema_problem(settings)
    if problem:
        return _fail(f"{args.config}: {problem}")
    configure_logging(args.log_level or "info")

    async def run() -> None:
        app = CtiApp(settings, roles=roles)
        await app.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await app.stop()

    return _run_on_configured_loop(args.config, settings, run)


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        settings = _load(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    from cti.store.migrate import upgrade

    res = upgrade(settings.store.url)
    if asyncio.iscoroutine(res):
        asyncio.run(res)
    print(f"database at {settings.store.url.split('@')[-1]} is up to date")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cti.demo.run import run_demo

    configure_logging(args.log_level or "warning")
    try:
        return run_demo(port=args.port, duration=args.duration, host=args.host or "127.0.0.1",
                        db_path=args.db, speed=args.speed, transcribe=not args.no_transcribe)
    except ListenError as exc:
        return _fail(str(exc), 1)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cti.transcribe.cli import transcribe_files

    configure_logging(args.log_level or "warning")
    try:
        settings = _load(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    tsettings = settings.transcribe
    overrides = {k: v for k, v in {"model": args.model, "language": args.language}.items() if v}
    if overrides:
        tsettings = tsettings.model_copy(update=overrides)
    from cti.transcribe.asr import channel_roles

    try:
        speakers = channel_roles(args.channels)
    except ValueError as exc:
        return _fail(f"--channels: {exc}")
    return transcribe_files(args.files, as_json=args.json, summary=args.summary, settings=tsettings,
                            console=Console(stderr=True), speakers=speakers)


def cmd_stats(args: argparse.Namespace, rest: list[str]) -> int:
    try:
        settings = _load(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    from cti.stats.cli import stats_main

    return stats_main(rest, settings)


def cmd_crm(args: argparse.Namespace, rest: list[str]) -> int:
    if args.action != "import":
        return _fail(f"unknown crm action {args.action!r} (known: import)")
    from cti.crm.local import crm_import_main

    return crm_import_main(rest)


def _retention(args: argparse.Namespace, what: str, **kw: Any) -> int:
    from cti.security.retention import RetentionError, run

    configure_logging(args.log_level or "warning")  # stdout is for the summary
    try:
        settings = _load(args.config)
        report = asyncio.run(run(settings, what, dry_run=args.dry_run, **kw))
    except (ConfigError, RetentionError) as exc:
        return _fail(str(exc))
    print(report.summary())
    return 1 if report.files_failed else 0


def cmd_purge(args: argparse.Namespace) -> int:
    from cti.security.retention import RetentionError, parse_age

    try:
        days = _load(args.config).security.retention_days
        age = args.older_than or (f"{days}d" if days else None)
        if age is None:
            return _fail("purge: give --older-than (e.g. 90d) or set security.retention_days")
        older_than = parse_age(age)
    except (ConfigError, RetentionError) as exc:
        return _fail(str(exc))
    return _retention(args, "purge", older_than=older_than)


def cmd_erase(args: argparse.Namespace) -> int:
    return _retention(args, "erase", number=args.number, contact_id=args.contact)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cti", description="CTI middleware: phone system <-> CRM")
    p.add_argument("--log-level", default=None, help="debug | info | warning (default: info; demo: warning)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run a gateway node (adapters, routing, web)")
    s.add_argument("--config", required=True)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("worker", help="run a transcription/summary worker (and, with --store, the store writers)")
    s.add_argument("--config", required=True)
    s.add_argument("--store", action="store_true",
                   help="also fold call events and write activities, stats and the agent log (for gateways "
                        "run with server.store_writers = false)")
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("demo", help="everything in one process: simulated PBX, SQLite, memory bus")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--host")
    s.add_argument("--duration", type=float, help="stop after this many seconds and print a summary")
    s.add_argument("--db", help="SQLite file (default: a fresh one in a temporary directory)")
    s.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    s.add_argument("--no-transcribe", action="store_true", help="do not run the in-process transcription worker")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("transcribe", help="transcribe recordings (and summarize them)")
    s.add_argument("files", nargs="+")
    s.add_argument("--json", action="store_true", help="one JSON object per file on stdout")
    s.add_argument("--summary", action="store_true")
    s.add_argument("--model")
    s.add_argument("--language")
    s.add_argument("--channels", default="agent,customer",
                   help="who speaks on the left and right channel of stereo files: agent,customer (default) "
                        "or customer,agent (FreeSWITCH RECORD_STEREO and Twilio dual recordings of inbound calls)")
    s.add_argument("--config")
    s.set_defaults(func=cmd_transcribe)

    s = sub.add_parser("migrate", help="create or upgrade the database schema")
    s.add_argument("--config")
    s.set_defaults(func=cmd_migrate)

    s = sub.add_parser("purge", help="delete calls and everything about them older than an age (retention)")
    s.add_argument("--older-than", help="age like 90d, 12w, 6m, 48h (default: security.retention_days)")
    s.add_argument("--config")
    s.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    s.set_defaults(func=cmd_purge)

    s = sub.add_parser("erase", help="delete everything stored for a phone number or a contact")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--number", help="phone number (any format the site region understands)")
    who.add_argument("--contact", help="contact id in the local CRM directory (the contact goes too)")
    s.add_argument("--config")
    s.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    s.set_defaults(func=cmd_erase)

    s = sub.add_parser("stats", help="statistics as a table or CSV (cti stats --help)", add_help=False)
    s.add_argument("--config")
    s.set_defaults(func=cmd_stats, passthrough=True)

    s = sub.add_parser("crm", help="local CRM directory: cti crm import contacts.csv [--accounts accounts.csv]",
                       add_help=False)
    s.add_argument("action")
    s.set_defaults(func=cmd_crm, passthrough=True)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        return args.func(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
