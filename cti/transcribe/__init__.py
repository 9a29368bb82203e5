"""Recording -> speech recognition -> redaction -> summary -> call history (DB + CRM)."""
