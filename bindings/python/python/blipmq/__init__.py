"""BlipMQ for Python: an asyncio and a blocking client for the BlipMQ broker,
built on the Rust client crate.

>>> async with await blipmq.connect("127.0.0.1:7878") as client:
...     async with await client.subscribe("orders.*") as orders:
...         await client.publish("orders.created", b"order #1")
...         message = await orders.next(timeout=5)
"""

import atexit as _atexit

from . import _native, _sync
from ._client import Client, Headers, Subscription, connect
from . import _errors
from ._errors import *  # noqa: F403 (one class per wire code, generated)
from ._events import (
    ClientEvent,
    Closed,
    DisconnectKind,
    Disconnected,
    Events,
    ReconnectFailed,
    Reconnected,
    ServerError,
)
from ._native import Message
from ._sync import SyncClient, SyncEvents, SyncMessage, SyncSubscription, connect_sync
from ._tls import TLS

__version__: str = _native.__version__

__all__ = [
    "Client",
    "ClientEvent",
    "Closed",
    "DisconnectKind",
    "Disconnected",
    "Events",
    "Headers",
    "Message",
    "ReconnectFailed",
    "Reconnected",
    "ServerError",
    "Subscription",
    "SyncClient",
    "SyncEvents",
    "SyncMessage",
    "SyncSubscription",
    "TLS",
    "connect",
    "connect_sync",
    *_errors.__all__,
]


@_atexit.register
def _shutdown() -> None:
    # The blocking API's loop first (it may wait on the runtime), then the
    # runtime: threads left running as the interpreter finalizes would crash it.
    _sync._stop()
    _native.shutdown()
