"""The bus: publish, fan-out, consumer groups and retry policy, transport-free (gRPC and HTTP call it)."""
