"""The gRPC transport: thin servicers over the bus (decode, call the service layer, encode)."""
