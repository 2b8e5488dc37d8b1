"""The asyncio API: :func:`connect`, :class:`Client`, :class:`Subscription`.

Each method is a short adapter over the native module (``blipmq._native``),
which runs the Rust client on its own tokio runtime.
"""

from __future__ import annotations

from types import TracebackType
from typing import Iterable, List, Mapping, Optional, Tuple, Type, Union

from . import _native
from ._errors import ClientClosedError
from ._events import Events
from ._native import Message

HeaderValue = Union[bytes, str]
Headers = Union[Mapping[str, HeaderValue], Iterable[Tuple[str, HeaderValue]]]
"""Message headers to publish: a mapping, or ``(key, value)`` pairs in order
(keys may repeat). ``str`` values are sent as UTF-8."""


async def connect(
    addr: str = "127.0.0.1:7878",
    *,
    api_key: Optional[str] = None,
    name: Optional[str] = None,
    connect_timeout: Optional[float] = None,
    request_timeout: Optional[float] = None,
    reconnect: bool = True,
    subscription_capacity: Optional[int] = None,
) -> Client:
    """Connect to the broker at ``addr`` (``"host:port"``).

    Args:
        api_key: required when the broker has API keys configured.
        name: sent in the handshake; the broker logs it.
        connect_timeout: seconds allowed to connect and handshake (default 5).
        request_timeout: seconds allowed for an answer to a subscribe,
            unsubscribe, flush or QoS 1 publish (default 10).
        reconnect: after a lost connection, reconnect with backoff and
            subscribe again (default); ``False`` closes the client instead.
        subscription_capacity: messages a subscription buffers before the
            client stops reading from the broker (default 8192).

    Raises:
        ConnectError: the broker could not be reached (600).
        AuthError: the broker refused the API key (200).
        TimeoutError: no handshake within ``connect_timeout`` (601).
    """
    native = await _native.connect(
        addr,
        api_key=api_key,
        name=name,
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        reconnect=reconnect,
        subscription_capacity=subscription_capacity,
    )
    return Client(native)


class Client:
    """A connection to a BlipMQ broker; make one with :func:`connect`.

    ``async with await blipmq.connect(...) as client:`` closes it on exit.
    """

    __slots__ = ("_native",)

    def __init__(self, native: _native.Client) -> None:
        self._native = native

    @property
    def max_message_size(self) -> int:
        """The largest payload the broker accepts, in bytes."""
        return self._native.max_message_size

    @property
    def status(self) -> str:
        """``"connected"``, ``"reconnecting"`` (after a lost connection) or
        ``"closed"``."""
        return self._native.status

    def events(self) -> Events:
        """The connection's changes from this call on, as an async iterator
        of :data:`ClientEvent` (:class:`Disconnected`, :class:`Reconnected`,
        :class:`ReconnectFailed`, :class:`ServerError`, :class:`Closed`);
        it ends after :class:`Closed`. A plain call (not a coroutine), so no
        event between it and the first ``await`` is missed::

            events = client.events()
            async for event in events:
                print(event)
        """
        return Events(self._native.events())

    async def publish(
        self,
        topic: str,
        payload: Union[bytes, bytearray],
        ttl_ms: int = 0,
        qos: int = 0,
        headers: Optional[Headers] = None,
    ) -> Optional[int]:
        """Publish ``payload`` to ``topic``.

        At QoS 0 this returns ``None`` once the message is queued for sending
        (it waits only while the outgoing queue is full). At QoS 1 it returns
        the broker's message id once the broker confirms. ``ttl_ms`` limits
        how long the message may wait for delivery (0: the broker's default).

        Raises:
            InvalidTopicError: 300; MessageTooLargeError: 400; InvalidHeaderError: 304;
            HeadersTooLargeError: 404 (all checked before sending);
            UnsupportedQosError: 303 when the broker does not offer ``qos``;
            ClientClosedError: 603.
        """
        return await self._native.publish(topic, payload, ttl_ms, qos, headers)

    def publish_nowait(
        self,
        topic: str,
        payload: Union[bytes, bytearray],
        ttl_ms: int = 0,
        headers: Optional[Headers] = None,
    ) -> None:
        """Queue ``payload`` for ``topic`` at QoS 0 without waiting: a plain
        call, not a coroutine, and the fastest way to publish. Where
        :meth:`publish` waits for room in the client's outgoing queue, this
        raises :class:`QueueFull` and sends nothing; back off (e.g.
        ``await client.publish(...)`` once) and go on.

        Raises:
            QueueFullError: 402, the outgoing queue is full; InvalidTopicError: 300;
            MessageTooLargeError: 400; InvalidHeaderError: 304; HeadersTooLargeError: 404;
            ClientClosedError: 603.
        """
        self._native.publish_nowait(topic, payload, ttl_ms, headers)

    async def subscribe(
        self,
        pattern: str,
        qos: int = 0,
        durable: Optional[str] = None,
        group: Optional[str] = None,
    ) -> Subscription:
        """Subscribe to a topic or pattern (``*`` matches one token, ``>``
        the rest); returns once the broker confirms.

        Raises:
            InvalidTopicError: 300; UnsupportedQosError: 303; ClientClosedError: 603.
        """
        native = await self._native.subscribe(pattern, qos, durable, group)
        return Subscription(native)

    async def flush(self) -> None:
        """Wait until the broker has handled everything sent before."""
        await self._native.flush()

    async def close(self) -> None:
        """Send what is queued and close. Subscriptions end; later calls
        raise :class:`ClientClosed`. Closing twice is harmless."""
        await self._native.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()


class Subscription:
    """Messages matching a pattern, in order; from :meth:`Client.subscribe`.

    ``async for message in subscription:`` ends when the subscription ends
    (unsubscribed, or the client closed). ``async with`` ends it on exit (a
    durable one is detached, never deleted: see :meth:`detach`).
    """

    __slots__ = ("_native",)

    def __init__(self, native: _native.Subscription) -> None:
        self._native = native

    @property
    def pattern(self) -> str:
        """The topic or pattern subscribed to."""
        return self._native.pattern

    async def next(self, timeout: Optional[float] = None) -> Message:
        """The next message, waiting at most ``timeout`` seconds (forever
        when ``None``). Cancelling the wait loses no message.

        Raises:
            TimeoutError: 601, when ``timeout`` passes first.
            ClientClosedError: 603, once the subscription has ended.
        """
        return await self._native.next(timeout)

    async def next_batch(
        self, max_messages: int, timeout: Optional[float] = None
    ) -> List[Message]:
        """Up to ``max_messages`` messages: waits at most ``timeout`` seconds
        for the first, then takes what is already buffered. An empty list
        means the timeout passed.

        Raises:
            ClientClosedError: 603, once the subscription has ended.
        """
        return await self._native.next_batch(max_messages, timeout)

    async def unsubscribe(self) -> None:
        """Stop the subscription and wait for the broker to confirm. A
        pending :meth:`next` raises :class:`ClientClosed`; buffered messages
        are discarded. Calling it again does nothing."""
        await self._native.unsubscribe()

    async def detach(self) -> None:
        """Stop receiving without deleting anything: a plain subscription
        ends, a durable one keeps its unacked messages for the next
        subscribe with its name (``unsubscribe`` deletes it)."""
        await self._native.detach()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._native.next()
        except ClientClosedError:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        # Leaving the block never deletes a durable subscription.
        try:
            await self.detach()
        except ClientClosedError:
            pass  # the client closed first: nothing left to undo
