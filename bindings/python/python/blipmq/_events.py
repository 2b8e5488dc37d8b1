"""The changes of a client's connection: :meth:`Client.events` yields them.

Each kind is a small frozen dataclass, so ``match`` can take them apart::

    async for event in client.events():
        match event:
            case blipmq.Disconnected(kind="protocol", reason=reason):
                log.error("the broker sent garbage: %s", reason)
            case blipmq.Disconnected(reason=reason):
                log.warning("lost the broker: %s", reason)
            case blipmq.Reconnected():
                log.info("back")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Tuple, Union

from . import _native
from ._errors import BlipMQError, ClientClosedError, error_from_code


@dataclass(frozen=True)
class Reconnected:
    """The client is connected again after a lost connection and has sent
    its subscriptions again: whatever it sends from now on (a
    :meth:`Client.flush`, say) reaches the broker after them.
    ``connection_id`` is the broker's id of the new connection and
    ``address`` the broker address it is to, as given to connect."""

    connection_id: int
    address: str


DisconnectKind = Literal["broker_closed", "io", "protocol"]
"""Why a connection ended: the broker closed it (a restart, a limit, a
keepalive it did not get an answer to), reading or writing failed, or the
broker sent bytes that are not frames."""


@dataclass(frozen=True)
class Disconnected:
    """The connection was lost; the client reconnects with backoff unless
    it was made with ``reconnect=False``.

    ``reason`` says why for people; ``kind`` says why to act on
    (:data:`DisconnectKind`); ``code`` is the wire code that goes with it,
    the one calls cut short by the disconnect fail with: 100
    (``MalformedFrame``) for ``"protocol"``, 602 (``ConnectionClosed``)
    otherwise; ``io_kind``, for ``"io"``, is the I/O error's kind
    (``"connection_reset"``, ``"timed_out"``, ...). The client always sets
    ``kind`` and ``code``; they are ``None`` only in an event made by hand
    as ``Disconnected(reason)``."""

    reason: str
    kind: Optional[DisconnectKind] = None
    code: Optional[int] = None
    io_kind: Optional[str] = None


@dataclass(frozen=True)
class ReconnectFailed:
    """Reconnect attempt ``attempt`` (from 1) failed; the next follows
    after a backoff."""

    attempt: int
    error: str


@dataclass(frozen=True)
class ServerError:
    """The broker sent an error that answers no call, e.g. ``ShuttingDown``
    before it stops; ``error`` is the matching :class:`BlipMQError`."""

    error: BlipMQError


@dataclass(frozen=True)
class Closed:
    """The client has closed (by :meth:`Client.close`, or reconnecting gave
    up): the last event."""


ClientEvent = Union[Reconnected, Disconnected, ReconnectFailed, ServerError, Closed]
"""Any event of :meth:`Client.events`."""


def _from_native(raw: Tuple[Any, ...]) -> ClientEvent:
    kind = raw[0]
    if kind == "connected":
        return Reconnected(int(raw[1]), str(raw[2]))
    if kind == "disconnected":
        reason, disconnect_kind, code, io_kind = raw[1:]
        return Disconnected(str(reason), disconnect_kind, code, io_kind)
    if kind == "reconnect_failed":
        return ReconnectFailed(int(raw[1]), str(raw[2]))
    if kind == "server_error":
        code, name, message = raw[1:]
        return ServerError(error_from_code(int(code), str(name), str(message)))
    if kind == "closed":
        return Closed()
    raise AssertionError(f"unknown client event {raw!r}")


class Events:
    """The events of one client from the call of :meth:`Client.events` on,
    in order. ``async for`` ends after :class:`Closed`. Every call of
    ``events()`` gets every event (one kept but never read holds its own,
    which are few); dropping it stops its share."""

    __slots__ = ("_native",)

    def __init__(self, native: _native.Events) -> None:
        self._native = native

    async def next(self, timeout: Optional[float] = None) -> ClientEvent:
        """The next event, waiting at most ``timeout`` seconds (forever when
        ``None``). A wait that times out or is cancelled loses no event.

        Raises:
            TimeoutError: 601, when ``timeout`` passes first.
            ClientClosedError: 603, after :class:`Closed` was taken.
        """
        return _from_native(await self._native.next(timeout))

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> ClientEvent:
        try:
            return await self.next()
        except ClientClosedError:
            raise StopAsyncIteration from None
