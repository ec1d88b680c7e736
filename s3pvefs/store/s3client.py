"""The aiobotocore S3 client with a mount's settings, and where its credentials come from.

Every S3 client s3pvefs makes comes from ``open_s3_client``: the mount's store (through
``open_client``, in the store's loop thread) and the direct client that `s3pvefs bench`
measures the mount against, so that both talk to S3 alike.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.credentials import RefreshableCredentials

from s3pvefs import logsetup
from s3pvefs.config.settings import Config


@dataclass(frozen=True)
class CredentialInfo:
    """Where the credentials in use come from (botocore's provider name), never the secret."""

    method: str | None  # "explicit", "env", "shared-credentials-file", "custom-process", ...
    refreshable: bool  # botocore refreshes them before they expire
    access_key_hint: str | None  # the key id's first characters, for telling keys apart


# -- client setup (runs in an asyncio loop: the store's loop thread, or the bench's) --------


def _client_config(config: Config) -> AioConfig:
    return AioConfig(
        region_name=config.region,
        # No SHA-256 of every body over plain HTTP (botocore's default there): it cost a
        # second pass over each part in the loop thread. Every body carries a signed
        # Content-MD5 instead, which the server checks (docs/integrity.md).
        s3={"addressing_style": config.addressing_style, "payload_signing_enabled": False},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retries={"mode": config.retry_mode, "total_max_attempts": config.max_attempts},
        max_pool_connections=config.max_connections,
        # Many S3-compatible servers reject the CRC trailers botocore sends by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _client_kwargs(config: Config) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "region_name": config.region,
        "endpoint_url": config.endpoint_url,
        "config": _client_config(config),
    }
    if not config.verify_tls:
        kwargs["verify"] = False
    elif config.ca_bundle:
        kwargs["verify"] = config.ca_bundle
    if config.access_key_id and config.secret_access_key:
        kwargs["aws_access_key_id"] = config.access_key_id
        kwargs["aws_secret_access_key"] = config.secret_access_key
        kwargs["aws_session_token"] = config.session_token
    return kwargs


def _session(config: Config) -> AioSession:
    explicit_keys = bool(config.access_key_id and config.secret_access_key)
    if config.profile and not explicit_keys:
        return AioSession(profile=config.profile)
    return AioSession()  # the standard chain: env, shared files, instance metadata, ...


def open_s3_client(config: Config, session: AioSession | None = None) -> Any:
    """An aiobotocore S3 client with the mount's settings (endpoint, region, addressing style,
    timeouts, retries, connection pool, TLS, checksum mode, credentials), as an async context
    manager to enter in an asyncio loop (every S3 client s3pvefs makes comes from here).
    ``session`` is the one to ask for the credentials afterwards (default: a new one).
    """
    return (session or _session(config)).create_client("s3", **_client_kwargs(config))


async def open_client(config: Config) -> tuple[AsyncExitStack, Any, CredentialInfo]:
    """The store's client (entered on the returned stack) and what its credentials are."""
    stack = AsyncExitStack()
    session = _session(config)
    # create_client resolves the credentials (chain or explicit) before it returns.
    client = await stack.enter_async_context(open_s3_client(config, session))
    try:
        credentials = await _credentials_in_use(session, config)
    except BaseException:
        await stack.aclose()
        raise
    return stack, client, credentials


async def _credentials_in_use(session: AioSession, config: Config) -> CredentialInfo:
    """Describe the client's credentials and mask their secrets in every log from now on."""
    if config.access_key_id and config.secret_access_key:
        return CredentialInfo("explicit", False, _key_hint(config.access_key_id))
    credentials = await session.get_credentials()  # the object the client signs with
    if credentials is None:
        return CredentialInfo(None, False, None)
    frozen = await credentials.get_frozen_credentials()
    for secret in (frozen.secret_key, frozen.token):
        if secret:
            logsetup.add_secret(secret)
    return CredentialInfo(
        credentials.method, isinstance(credentials, RefreshableCredentials),
        _key_hint(frozen.access_key),
    )


def _key_hint(access_key: str | None) -> str | None:
    if not access_key:
        return None
    return access_key[:4] + "***" if len(access_key) > 8 else "***"

