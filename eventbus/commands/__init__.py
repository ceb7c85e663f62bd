"""The client commands of the CLI (`publish`, `tail`, `groups`), each a small async function over the client."""

import os

# grpc core reads this once, when grpc is first imported, and this package is imported before grpc is by both
# `eventbus serve` and the client commands. Recent grpcio print INFO lines (every failed TLS handshake, say) to
# stderr, into the JSON logs and under the CLI's one-line errors; ERROR is grpc's documented default. An operator's
# own GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
