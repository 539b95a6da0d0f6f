"""Where model files come from besides a local path: an HTTP(S) URL pinned by sha256."""
