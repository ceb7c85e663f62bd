"""Tests of the outbound client and the SSRF policy."""
