"""CRM connectors: find who is calling, log what happened (see cti.crm.base)."""
