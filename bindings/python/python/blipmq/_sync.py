"""The blocking API: :func:`connect_sync`, for scripts.

Every call runs the asyncio API on one background event loop thread and
waits for the result. The wait is interruptible: Ctrl-C raises
``KeyboardInterrupt`` and cancels the operation.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Awaitable, Callable, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from . import _client
from ._client import Headers
from ._drops import OnDrop
from ._errors import ClientClosedError
from ._events import ClientEvent, Events
from ._native import Message
from ._tls import TLS

T = TypeVar("T")

_lock = threading.Lock()
_loop: Optional[asyncio.AbstractEventLoop] = None
_thread: Optional[threading.Thread] = None


def _event_loop() -> asyncio.AbstractEventLoop:
    """The background loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="blipmq-sync", daemon=True
            )
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def _run(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Call ``function(*args)`` on the background loop and wait for it."""

    async def call() -> T:
        return await function(*args)

    future: Future[T] = asyncio.run_coroutine_threadsafe(call(), _event_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # e.g. KeyboardInterrupt while waiting
        raise


def _stop() -> None:
    """Stop the background loop (at interpreter exit)."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        _loop = _thread = None
    if loop is not None and thread is not None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=1.0)


def _forget_after_fork() -> None:
    # The loop's thread exists only in the parent; the child starts its own.
    global _loop, _thread, _lock
    _loop = _thread = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def connect_sync(
    addr: Union[str, Sequence[str]] = "127.0.0.1:7878",
    *,
    api_key: Optional[str] = None,
    name: Optional[str] = None,
    connect_timeout: Optional[float] = None,
    request_timeout: Optional[float] = None,
    reconnect: bool = True,
    subscription_capacity: Optional[int] = None,
    tls: Union[TLS, bool, None] = None,
) -> SyncClient:
    """Connect, blocking; the arguments and errors are those of
    :func:`blipmq.connect`. ``with blipmq.connect_sync(...) as client:``
    closes on exit."""

    async def connect() -> _client.Client:
        return await _client.connect(
            addr,
            api_key=api_key,
            name=name,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            reconnect=reconnect,
            subscription_capacity=subscription_capacity,
            tls=tls,
        )

    return SyncClient(_run(connect))


class SyncClient:
    """The blocking twin of :class:`blipmq.Client`, from :func:`connect_sync`."""

    __slots__ = ("_client",)

    def __init__(self, client: _client.Client) -> None:
        self._client = client

    @property
    def max_message_size(self) -> int:
        """The largest payload the broker accepts, in bytes."""
        return self._client.max_message_size

    @property
    def status(self) -> str:
        """``"connected"``, ``"reconnecting"`` or ``"closed"``."""
        return self._client.status

    def events(self) -> SyncEvents:
        """The connection's changes from this call on; see
        :meth:`blipmq.Client.events`."""
        return SyncEvents(self._client.events())

    def publish(
        self,
        topic: str,
        payload: Union[bytes, bytearray],
        ttl_ms: int = 0,
        qos: int = 0,
        headers: Optional[Headers] = None,
    ) -> Optional[int]:
        """Publish; see :meth:`blipmq.Client.publish`."""
        return _run(self._client.publish, topic, payload, ttl_ms, qos, headers)

    def publish_nowait(
        self,
        topic: str,
        payload: Union[bytes, bytearray],
        ttl_ms: int = 0,
        headers: Optional[Headers] = None,
    ) -> None:
        """Queue a QoS 0 message without waiting or raise
        :class:`blipmq.QueueFullError`; see :meth:`blipmq.Client.publish_nowait`."""
        self._client.publish_nowait(topic, payload, ttl_ms, headers)

    def subscribe(
        self,
        pattern: str,
        qos: int = 0,
        durable: Optional[str] = None,
        group: Optional[str] = None,
        *,
        on_drop: Optional[OnDrop] = None,
        ack_timeout: Optional[float] = None,
        max_deliveries: Optional[int] = None,
    ) -> SyncSubscription:
        """Subscribe; see :meth:`blipmq.Client.subscribe`. ``on_drop`` is
        called on the background loop's thread while the receiving call
        waits for it; what it raises, that call raises."""

        async def subscribe() -> _client.Subscription:
            return await self._client.subscribe(
                pattern,
                qos,
                durable,
                group,
                on_drop=on_drop,
                ack_timeout=ack_timeout,
                max_deliveries=max_deliveries,
            )

        return SyncSubscription(_run(subscribe))

    def flush(self) -> None:
        """Wait until the broker has handled everything sent before."""
        _run(self._client.flush)

    def close(self) -> None:
        """Send what is queued and close; see :meth:`blipmq.Client.close`."""
        _run(self._client.close)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()


class SyncSubscription:
    """The blocking twin of :class:`blipmq.Subscription`: a plain iterator of
    :class:`SyncMessage` that ends when the subscription ends; ``with``
    ends it on exit (a durable one is detached, never deleted)."""

    __slots__ = ("_subscription",)

    def __init__(self, subscription: _client.Subscription) -> None:
        self._subscription = subscription

    @property
    def pattern(self) -> str:
        """The topic or pattern subscribed to."""
        return self._subscription.pattern

    @property
    def dropped(self) -> int:
        """Messages the broker has reported discarded so far; see
        :attr:`blipmq.Subscription.dropped`."""
        return self._subscription.dropped

    def next(self, timeout: Optional[float] = None) -> SyncMessage:
        """The next message; see :meth:`blipmq.Subscription.next`."""
        return SyncMessage(_run(self._subscription.next, timeout))

    def next_batch(
        self, max_messages: int, timeout: Optional[float] = None
    ) -> List[SyncMessage]:
        """Up to ``max_messages``; see :meth:`blipmq.Subscription.next_batch`."""
        batch = _run(self._subscription.next_batch, max_messages, timeout)
        return [SyncMessage(message) for message in batch]

    def unsubscribe(self) -> None:
        """Stop the subscription; see :meth:`blipmq.Subscription.unsubscribe`."""
        _run(self._subscription.unsubscribe)

    def detach(self) -> None:
        """Stop receiving, keeping a durable subscription; see
        :meth:`blipmq.Subscription.detach`."""
        _run(self._subscription.detach)

    def __iter__(self) -> Iterator[SyncMessage]:
        return self

    def __next__(self) -> SyncMessage:
        try:
            return self.next()
        except ClientClosedError:
            raise StopIteration from None

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        # Leaving the block never deletes a durable subscription.
        try:
            self.detach()
        except ClientClosedError:
            pass  # the client closed first: nothing left to undo


class SyncEvents:
    """The blocking twin of :class:`blipmq.Events`: a plain iterator of
    :data:`blipmq.ClientEvent` that ends after :class:`blipmq.Closed`."""

    __slots__ = ("_events",)

    def __init__(self, events: Events) -> None:
        self._events = events

    def next(self, timeout: Optional[float] = None) -> ClientEvent:
        """The next event; see :meth:`blipmq.Events.next`."""
        return _run(self._events.next, timeout)

    def __iter__(self) -> Iterator[ClientEvent]:
        return self

    def __next__(self) -> ClientEvent:
        try:
            return self.next()
        except ClientClosedError:
            raise StopIteration from None


class SyncMessage:
    """A received message, as :class:`blipmq.Message`, with a blocking
    :meth:`ack`."""

    __slots__ = ("_message",)

    def __init__(self, message: Message) -> None:
        self._message = message

    @property
    def topic(self) -> str:
        """The topic the message was published to."""
        return self._message.topic

    @property
    def payload(self) -> bytes:
        """The payload, byte for byte as published."""
        return self._message.payload

    @property
    def headers(self) -> List[Tuple[str, bytes]]:
        """The headers as ``(key, value)`` pairs, in order."""
        return self._message.headers

    @property
    def id(self) -> int:
        """The broker-assigned message id."""
        return self._message.id

    @property
    def timestamp_ms(self) -> int:
        """When the broker accepted the message, in ms since the Unix epoch."""
        return self._message.timestamp_ms

    @property
    def delivery_count(self) -> int:
        """1 on first delivery, higher when the broker redelivers."""
        return self._message.delivery_count

    @property
    def delivery_id(self) -> int:
        """What the broker acks this delivery by (0 at QoS 0)."""
        return self._message.delivery_id

    @property
    def dropped_before(self) -> int:
        """How many messages the broker discarded for the subscription just
        before this one (0 when none were)."""
        return self._message.dropped_before

    def ack(self) -> None:
        """Acknowledge the message (a no-op for QoS 0 deliveries)."""
        _run(self._message.ack)

    def nak(self, delay: float = 0.0) -> None:
        """Processing failed: deliver it again after ``delay`` seconds."""
        _run(self._message.nak, delay)

    def term(self) -> None:
        """It can never be processed: move it to the dead-letter topic now."""
        _run(self._message.term)

    def in_progress(self) -> None:
        """Still working: restart the delivery's ack timeout."""
        _run(self._message.in_progress)

    def __repr__(self) -> str:
        return repr(self._message)
