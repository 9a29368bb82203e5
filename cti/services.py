"""The running components, built once by cti.app and handed to the web layer.

Route modules read them from `request.app[SERVICES]` (cti.web.common); nothing
else is global.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cti.config import Settings
from cti.metrics import Metrics


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    clock: Any                      # cti.clock.Clock
    bus: Any                        # cti.bus.Bus
    db: Any                         # cti.store.db.Database (db.engine: AsyncEngine)
    tokens: Any                     # cti.web.auth.TokenStore
    node_id: str = "node-1"
    adapters: dict[str, Any] = field(default_factory=dict)   # provider name -> Adapter
    router: Any = None              # cti.routing.acd.Router
    crm: Any = None                 # cti.crm.base.Connector
    screen_pop: Any = None          # cti.routing.screen_pop.ScreenPop
    control: Any = None             # cti.calls.control.CallControl
    hub: Any = None                 # cti.web.ws.Hub
    extra: dict[str, Any] = field(default_factory=dict)
