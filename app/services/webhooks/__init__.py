"""Webhooks into buyers' systems (SPEC §9), by verb: endpoints (create, update, rotate, delete),
deliveries (the outbox: enqueue, list, redeliver, test), sender (claim, send, record: what the
workers run) and outbound (the HTTP client and its address guard)."""
