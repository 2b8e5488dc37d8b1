"""The asyncio API: :func:`connect`, :class:`Client`, :class:`Subscription`.

Each method is a short adapter over the native module (``blipmq._native``),
which runs the Rust client on its own tokio runtime.
"""

from __future__ import annotations

from time import monotonic
from types import TracebackType
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple, Type, Union

from . import _native
from ._drops import DropReports, OnDrop, warn_of_drops
from ._errors import BlipMQError, ClientClosedError, error_from_code
from ._events import Events
from ._native import Message
from ._tls import TLS, tls_option

HeaderValue = Union[bytes, str]
Headers = Union[Mapping[str, HeaderValue], Iterable[Tuple[str, HeaderValue]]]
"""Message headers to publish: a mapping, or ``(key, value)`` pairs in order
(keys may repeat). ``str`` values are sent as UTF-8."""


async def connect(
    addr: Union[str, Sequence[str]] = "127.0.0.1:7878",
    *,
    api_key: Optional[str] = None,
    name: Optional[str] = None,
    connect_timeout: Optional[float] = None,
    request_timeout: Optional[float] = None,
    reconnect: bool = True,
    subscription_capacity: Optional[int] = None,
    tls: Union[TLS, bool, None] = None,
) -> Client:
    """Connect to the broker at ``addr``: ``"host:port"``, or
    ``"tls://host:port"`` for TLS with the system's trusted roots; or to
    the first that answers of several brokers, as a list
    (``["a:7878", "b:7878"]``) or a comma-separated string. The addresses
    are tried in order; after a lost connection the client reconnects to
    them in turn, starting with the one it was connected to, after a random
    wait up to its backoff (so that many clients do not return at once).

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
        tls: speak TLS with these options (:class:`TLS`: a CA, a client
            certificate, a server name), whatever the address says;
            ``True`` is ``TLS()``, the system's roots.

    Raises:
        ConnectError: the broker could not be reached, or TLS failed (600;
            the message says why, for each address).
        InvalidArgumentError: no address was given (301).
        AuthError: the broker refused the API key (200).
        TimeoutError: no handshake within ``connect_timeout`` (601).
    """
    native = await _native.connect(
        addr if isinstance(addr, str) else list(addr),
        api_key=api_key,
        name=name,
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        reconnect=reconnect,
        subscription_capacity=subscription_capacity,
        tls=tls_option(tls),
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
        *,
        on_drop: Optional[OnDrop] = None,
        ack_timeout: Optional[float] = None,
        max_deliveries: Optional[int] = None,
    ) -> Subscription:
        """Subscribe to a topic or pattern (``*`` matches one token, ``>``
        the rest); returns once the broker confirms.

        At QoS 1, ``ack_timeout`` (seconds, 0.01 to 3600) is how long a
        delivery may go without an ack, ``nak``, ``term`` or
        ``in_progress`` before the broker sends it again, and
        ``max_deliveries`` (1 to 10000) how often a message is delivered
        before it goes to the dead-letter topic; ``None`` keeps the
        broker's defaults.

        ``on_drop(count)`` hears of the messages the broker discards for
        the subscription instead of delivering them (its queue was full,
        they outlived their TTL, or the broker's memory budget ran out):
        once per gap, in order, as the consumer reaches the gap: before
        the :meth:`Subscription.next`, :meth:`Subscription.next_batch` or
        ``async for`` step that returns the message after the gap returns
        it; or, when no message follows, in the next receive as it waits
        (and waits on: a gap is not a timeout). It runs in the
        receiving call, and an exception it raises propagates to that
        call's caller; the messages the call had taken are returned by the
        next receive, and no gap is told twice. Without ``on_drop``, each
        gap is a warning on the ``blipmq`` logger.

        Raises:
            InvalidTopicError: 300; UnsupportedQosError: 303; ClientClosedError: 603.
            InvalidArgumentError: 301, ``ack_timeout`` or ``max_deliveries``
            out of bounds, or given at QoS 0.
            TypeError: ``on_drop`` is not callable.
        """
        if on_drop is not None and not callable(on_drop):
            raise TypeError(f"on_drop must be callable, not {type(on_drop).__name__}")
        native = await self._native.subscribe(
            pattern, qos, durable, group, ack_timeout, max_deliveries
        )
        return Subscription(native, on_drop or warn_of_drops(pattern))

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


def _timed_out() -> BlipMQError:
    return error_from_code(601, "Timeout", "no message within the timeout")


class Subscription:
    """Messages matching a pattern, in order; from :meth:`Client.subscribe`.

    ``async for message in subscription:`` ends when the subscription ends
    (unsubscribed, or the client closed). ``async with`` ends it on exit (a
    durable one is detached, never deleted: see :meth:`detach`).

    Messages the broker discards for the subscription go to the ``on_drop``
    given to :meth:`Client.subscribe`; :attr:`dropped` counts them.
    """

    __slots__ = ("_native", "_drops")

    def __init__(self, native: _native.Subscription, on_drop: OnDrop) -> None:
        self._native = native
        self._drops = DropReports(on_drop)

    @property
    def pattern(self) -> str:
        """The topic or pattern subscribed to."""
        return self._native.pattern

    @property
    def dropped(self) -> int:
        """How many messages the broker has reported discarded for this
        subscription so far: what ``on_drop`` has been told, and gaps the
        consumer has not reached yet."""
        return self._native.dropped

    async def next(self, timeout: Optional[float] = None) -> Message:
        """The next message, waiting at most ``timeout`` seconds (forever
        when ``None``). Cancelling the wait loses no message.

        Raises:
            TimeoutError: 601, when ``timeout`` passes first.
            ClientClosedError: 603, once the subscription has ended.
            Whatever ``on_drop`` raises (see :meth:`Client.subscribe`).
        """
        # Awaits the native call itself rather than `next_batch`: while
        # nothing is discarded, one coroutine per message.
        deadline = None if timeout is None else monotonic() + timeout
        drops = self._drops
        if not drops.pending:
            batch, dropped_within, dropped_after = await self._native.next_batch(1, timeout)
            if not (dropped_within or dropped_after or drops.pending):
                if batch:
                    return batch[0]
                raise _timed_out()
            drops.take(batch, dropped_within, dropped_after)
        batch = await drops.receive(self._native, 1, deadline)
        if batch:
            return batch[0]
        raise _timed_out()

    async def next_batch(
        self, max_messages: int, timeout: Optional[float] = None
    ) -> List[Message]:
        """Up to ``max_messages`` messages: waits at most ``timeout`` seconds
        for the first, then takes what is already buffered. An empty list
        means the timeout passed. Cancelling the wait loses no message.

        Raises:
            ClientClosedError: 603, once the subscription has ended.
            Whatever ``on_drop`` raises (see :meth:`Client.subscribe`).
        """
        deadline = None if timeout is None else monotonic() + timeout
        drops = self._drops
        if not drops.pending:
            batch, dropped_within, dropped_after = await self._native.next_batch(
                max_messages, timeout
            )
            if not (dropped_within or dropped_after or drops.pending):
                return batch  # nothing discarded (or [] when the time passed)
            drops.take(batch, dropped_within, dropped_after)
        return await drops.receive(self._native, max_messages, deadline)

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
        # `next()` without a timeout, inlined (see there).
        drops = self._drops
        try:
            if not drops.pending:
                batch, dropped_within, dropped_after = await self._native.next_batch(1)
                if not (dropped_within or dropped_after or drops.pending):
                    return batch[0]
                drops.take(batch, dropped_within, dropped_after)
            return (await drops.receive(self._native, 1, None))[0]
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
