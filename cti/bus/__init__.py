"""The event bus: the only seam between stages (memory:// or redis://)."""

from cti.bus.base import Bus, Handler, Message, open_bus

__all__ = ["Bus", "Handler", "Message", "open_bus"]
