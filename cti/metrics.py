"""Prometheus metrics, one registry per app (no module globals, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("cti_events_in", "Call events received from providers", ["provider"], registry=r)
        self.events_failed = Counter(
            "cti_events_failed", "Events or wire messages that failed to parse or apply", ["stage"], registry=r
        )
        self.wire_errors = Counter(
            "cti_wire_errors", "Malformed or unknown provider wire messages", ["provider"], registry=r
        )
        self.bus_lag = Gauge("cti_bus_lag", "Entries not yet acknowledged", ["stream", "group"], registry=r)
        self.calls_active = Gauge("cti_calls_active", "Calls in progress", registry=r)
        self.ws_clients = Gauge("cti_websocket_clients", "Connected browser websockets", registry=r)
        self.ws_dropped = Counter("cti_websocket_dropped", "Slow websocket clients dropped", registry=r)
        self.pop_latency = Histogram(
            "cti_screen_pop_seconds", "Ringing event to pop queued for the agent's socket", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        # how late the loop runs a timer: every pop, routing decision and socket write waits as long
        self.loop_lag = Histogram(
            "cti_event_loop_lag_seconds", "How late the event loop ran a 100 ms timer", registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.adapter_reconnects = Counter(
            "cti_adapter_reconnects", "Provider reconnections", ["provider"], registry=r
        )
        # live Python objects' memory blocks: flat under steady load while RSS may still creep
        # (allocator retention), so the two together tell a leak from fragmentation
        self.heap_blocks = Gauge("cti_python_heap_blocks", "Memory blocks allocated by Python", registry=r)
        self.jobs = Counter("cti_jobs", "Background jobs by result", ["kind", "result"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
