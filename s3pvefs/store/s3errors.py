"""Failed S3 requests as ``StoreError``: what botocore and aiohttp raise, described by an S3
error code (which ``errors.py`` classifies into a ``StoreKind``).

``S3Store`` catches ``REQUEST_FAILURES`` around every request and turns them into a
``StoreError`` with ``to_store_error``; anything else is a bug and propagates as is.
"""

from __future__ import annotations

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from s3pvefs.errors import StoreError

# Network and protocol failures (anything else is a bug and propagates as is).
TRANSPORT_FAILURES = (BotoCoreError, ClientError, aiohttp.ClientError, OSError)


class BodyReadError(Exception):
    """Reading a GET body failed after the response headers arrived (botocore won't retry)."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


# Failures that become StoreError.
REQUEST_FAILURES = (*TRANSPORT_FAILURES, BodyReadError)


def _error_from_client_error(operation: str, exc: ClientError) -> tuple[str | None, str]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error.get("Code") or (str(status) if status else None)
    if code == "404":  # a HEAD answer has no body, so only the status says what is missing
        code = "NoSuchBucket" if operation == "HeadBucket" else "NotFound"
    message = error.get("Message") or str(exc)
    return code, f"HTTP {status}: {message}" if status else message


def to_store_error(operation: str, key: str | None, exc: BaseException) -> StoreError:
    """Describe a failed request as a StoreError (its code decides the kind)."""
    if isinstance(exc, ClientError):
        code, message = _error_from_client_error(operation, exc)
    elif isinstance(exc, EndpointConnectionError):
        code, message = "EndpointConnectionError", str(exc)
    elif isinstance(exc, ConnectTimeoutError):
        code, message = "ConnectTimeout", str(exc)
    elif isinstance(exc, ReadTimeoutError):
        code, message = "ReadTimeout", str(exc)
    elif isinstance(exc, BodyReadError):
        code, message = "IncompleteBody", f"reading the response body failed: {exc.cause}"
    else:
        code, message = type(exc).__name__, str(exc) or type(exc).__name__
    return StoreError(operation, key, code, message)
