# Type stub of the pyo3 extension module (bindings/python/src/). Checked
# against the built module by tests/test_package.py (mypy stubtest).
from typing import Any, Awaitable, Generator, List, Optional, Tuple, Union, final

from ._tls import TLS

__all__ = ["Client", "Events", "Message", "Ready", "Subscription", "__version__", "connect", "shutdown"]
__version__: str

def connect(
    addr: Union[str, List[str]],
    api_key: Optional[str] = None,
    name: Optional[str] = None,
    connect_timeout: Optional[float] = None,
    request_timeout: Optional[float] = None,
    reconnect: bool = True,
    subscription_capacity: Optional[int] = None,
    tls: Optional[TLS] = None,
) -> Awaitable[Client]: ...
def shutdown() -> None: ...

@final
class Client:
    @property
    def max_message_size(self) -> int: ...
    @property
    def status(self) -> str: ...
    def events(self) -> Events: ...
    def publish(
        self,
        topic: str,
        payload: Union[bytes, bytearray],
        ttl_ms: int = 0,
        qos: int = 0,
        headers: Optional[Any] = None,
    ) -> Awaitable[Optional[int]]: ...
    def publish_nowait(
        self,
        topic: str,
        payload: Union[bytes, bytearray],
        ttl_ms: int = 0,
        headers: Optional[Any] = None,
    ) -> None: ...
    def subscribe(
        self,
        pattern: str,
        qos: int = 0,
        durable: Optional[str] = None,
        group: Optional[str] = None,
        ack_timeout: Optional[float] = None,
        max_deliveries: Optional[int] = None,
    ) -> Awaitable[Subscription]: ...
    def flush(self) -> Awaitable[None]: ...
    def close(self) -> Awaitable[None]: ...

@final
class Subscription:
    @property
    def pattern(self) -> str: ...
    @property
    def dropped(self) -> int: ...
    # (messages, dropped_within, dropped_after); see src/subscription.rs.
    def next_batch(
        self, max_messages: int, timeout: Optional[float] = None
    ) -> Awaitable[Tuple[List[Message], int, int]]: ...
    def unsubscribe(self) -> Awaitable[None]: ...
    def detach(self) -> Awaitable[None]: ...

@final
class Events:
    def next(self, timeout: Optional[float] = None) -> Awaitable[Tuple[Any, ...]]: ...

@final
class Message:
    """A message delivered to a subscription."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def headers(self) -> List[Tuple[str, bytes]]: ...
    @property
    def id(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def delivery_count(self) -> int: ...
    @property
    def delivery_id(self) -> int: ...
    @property
    def dropped_before(self) -> int: ...
    def ack(self) -> Awaitable[None]: ...
    def nak(self, delay: float = 0.0) -> Awaitable[None]: ...
    def term(self) -> Awaitable[None]: ...
    def in_progress(self) -> Awaitable[None]: ...

@final
class Ready:
    def __await__(self) -> Generator[Any, None, Any]: ...
    def __next__(self) -> Any: ...
