"""Protocol adapters: wire formats in and out, BerthError to status codes. No policy lives here."""

from berth.server.app import create_app

__all__ = ["create_app"]
