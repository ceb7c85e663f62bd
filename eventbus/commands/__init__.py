"""The client commands of the CLI (`publish`, `tail`, `groups`), each a small async function over the client."""
