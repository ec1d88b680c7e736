"""sd_notify(3): tell systemd (a ``Type=notify`` unit) how the mount is doing.

systemd passes the address of its notification socket in ``$NOTIFY_SOCKET``: a filesystem path,
or an abstract socket name written with a leading ``@``. A message is one datagram of
newline-separated ``KEY=value`` assignments (``READY=1``, ``STOPPING=1``, ``STATUS=...``,
``EXTEND_TIMEOUT_USEC=...``, ``WATCHDOG=1``). Without ``$NOTIFY_SOCKET`` (not started by
systemd, or not ``Type=notify``) every call does nothing.

Why no dependency: the protocol is a few lines over the standard ``socket`` module. The
``systemd-python`` bindings need libsystemd's headers and a compiler to install from PyPI (not
something to impose on a Proxmox host for one sendto()), and the small ``sdnotify`` package has
not been released for years and would still need the same error handling around it. Neither is
in the virtualenv.

Notifying never raises into the filesystem: a failure is logged once (as a warning), then only
at debug level, and the call returns False. A send waits at most ``SEND_TIMEOUT`` seconds for
room in the receiver's queue (systemd drains it at once; it is never full in practice), so a
stuck receiver cannot stall the mount for long. ``vsock:`` addresses (systemd >= 254, for
virtual machines) are not supported and disable notification with a warning.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

SEND_TIMEOUT = 1.0  # seconds


class Notifier:
    """Sends notifications to one systemd notification socket (or nowhere)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = _socket_address(address)
        self.watchdog_usec = watchdog_usec if self.address is not None else None
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for through ``$NOTIFY_SOCKET`` (and ``$WATCHDOG_USEC``)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET") or None, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` assignments in one datagram; True if it was sent.

        ``notify(READY=1, STATUS="mounted")`` sends ``READY=1\\nSTATUS=mounted``. A value's
        newlines become spaces (an assignment is one line).
        """
        if self.address is None or not fields:
            return False
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX,
                                             socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.settimeout(SEND_TIMEOUT)
            self._socket.sendto(message.encode("utf-8", "replace"), self.address)
            return True
        except Exception as exc:  # never into the filesystem
            self._complain(f"cannot notify systemd at {self._printable()}: {exc}")
            self.close()  # a fresh socket next time
            return False

    def ready(self, status: str) -> bool:
        return self.notify(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def stopping(self, status: str) -> bool:
        return self.notify(STOPPING=1, STATUS=status)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the current start/stop timeout may fire (only
        matters once the configured timeout itself has passed; systemd >= 236)."""
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half the unit's WatchdogSec=), or None."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except OSError:
                pass
            self._socket = None

    def _printable(self) -> str:
        address = self.address or ""
        return "@" + address[1:] if address.startswith("\0") else address

    def _complain(self, message: str) -> None:
        if self._warned:
            log.debug("%s", message)
        else:
            self._warned = True
            log.warning("%s (further notification errors are logged at debug level)", message)


def _socket_address(address: str | None) -> str | None:
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]  # abstract namespace
    if address.startswith("/"):
        return address
    log.warning("NOTIFY_SOCKET=%s is not a Unix socket address this version supports; "
                "systemd will not be told when the mount is ready", address)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC if it is meant for this process (WATCHDOG_PID unset or ours)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    return usec if usec > 0 else None


def _one_line(value: object) -> str:
    return str(value).replace("\r", " ").replace("\n", " ")
