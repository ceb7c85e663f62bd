"""The HTTP transport (aiohttp): health, readiness, problem+json errors; inbound webhooks and REST slot in here."""
