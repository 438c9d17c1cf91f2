"""Scheduled digests as one unit: the cog (``/digest`` and the scheduler that posts, ``cog.py``) and
its schedule arithmetic (``schedule.py``); their rows are ``storage.digests``."""

from .cog import DigestsCog, setup

__all__ = ["DigestsCog", "setup"]
