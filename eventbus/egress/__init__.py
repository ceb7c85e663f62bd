"""Outbound HTTP: the SSRF destination policy and the pooled, guarded client every delivery goes through."""
