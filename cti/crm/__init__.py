"""CRM connectors: find who is calling, log what happened (see cti.crm.base)."""

from __future__ import annotations

from typing import Any


def build_connector(settings: Any, engine: Any, *, session: Any = None) -> Any:
    """The connector `[crm] type` names, from the whole `Settings` (region, tenant, time zone from [site])."""
    from cti.crm.base import open_connector

    return open_connector(
        settings.crm,
        engine=engine,
        region=settings.site.default_region,
        tenant=settings.site.tenant,
        base_url=settings.server.public_url,
        session=session,
        timezone=settings.site.timezone,
    )
