"""Reading request bodies: JSON only, bounded in size, validated by a pydantic model."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from dockyard.api import errors

Model = TypeVar("Model", bound=BaseModel)

JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})


async def read_json(request: web.Request, *, allowed: frozenset[str] = JSON_TYPES) -> object:
    """The body as JSON; 415 for another content type, 413 past the size limit, 422 if bad."""
    if request.content_type not in allowed:
        raise errors.unsupported_media_type(request.content_type)
    raw = await request.read()  # aiohttp enforces client_max_size here (413)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.validation_failed(
            [errors.FieldError(field="(body)", message=f"not valid JSON: {exc}")]
        ) from None


async def read_model(request: web.Request, model: type[Model]) -> Model:
    """The body validated by ``model`` (which rejects unknown fields and bounds strings)."""
    data = await read_json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.from_validation_error(exc) from None
