"""Access control, rate limits and safe artifact loading; protocol-neutral (no FastAPI, no grpc)."""
