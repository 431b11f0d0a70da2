"""kdc-trio: a realtime gateway for AI chat applications on Trio."""

__version__ = "0.1.0"
