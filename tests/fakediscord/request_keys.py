"""What the recording middleware parses from a request and hands to the REST handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Upload:
    """One file part of a multipart request (discord.py sends ``files[n]`` beside ``payload_json``)."""

    field: str
    filename: str
    data: bytes
    content_type: str | None


JSON_BODY: web.RequestKey[Any] = web.RequestKey("json_body", object)
UPLOADS: web.RequestKey[list[Upload]] = web.RequestKey("uploads", list)
