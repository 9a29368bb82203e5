"""HTTP + WebSocket edge: REST API, browser sockets, pages, provider webhooks."""
