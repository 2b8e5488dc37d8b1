"""The exceptions of the blipmq package.

Every error carries the numeric ``code`` and its ``name`` from the protocol's
error table (``schema/blipmq.fbs``), whether the broker refused something or
the client gave up (codes 6xx). The class is chosen by the code; codes
without a class of their own raise :class:`BlipMQError` itself.
"""

from __future__ import annotations

import builtins
from typing import Dict, Type


class BlipMQError(Exception):
    """Base class of every blipmq error.

    Attributes:
        code: the wire code, e.g. ``300``.
        name: the code's name, e.g. ``"InvalidTopic"``.
        message: the detail, from the broker when it refused.
    """

    code: int
    name: str
    message: str

    def __init__(self, message: str, code: int = 0, name: str = "Unknown") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.name = name

    def __str__(self) -> str:
        return f"{self.name} ({self.code}): {self.message}"


class ConnectError(BlipMQError):
    """The broker could not be reached (600 ConnectFailed)."""


class AuthError(BlipMQError):
    """The broker refused the API key (200 AuthFailed)."""


class TimeoutError(BlipMQError, builtins.TimeoutError):
    """No answer in time (601 Timeout). Also a builtin ``TimeoutError``."""


class InvalidTopic(BlipMQError, ValueError):
    """A topic or pattern breaks the topic rules (300 InvalidTopic)."""


class InvalidArgument(BlipMQError, ValueError):
    """An argument is out of range (301 InvalidArgument)."""


class UnsupportedQos(BlipMQError):
    """The broker does not offer this QoS level (303 UnsupportedQos)."""


class InvalidHeader(BlipMQError, ValueError):
    """A header key breaks the header rules (304 InvalidHeader)."""


class PayloadTooLarge(BlipMQError, ValueError):
    """The payload is over the broker's limit (400 MessageTooLarge)."""


class QueueFull(BlipMQError):
    """A queue is full (402 QueueFull): from :meth:`Client.publish_nowait`
    when the client's outgoing queue has no room, or from the broker when a
    queue's overflow policy rejects the message."""


class HeadersTooLarge(BlipMQError, ValueError):
    """Too many headers or header bytes (404 HeadersTooLarge)."""


class ConnectionClosed(BlipMQError):
    """The connection closed before the answer came (602 ConnectionClosed)."""


class ClientClosed(BlipMQError):
    """The client or the subscription is closed (603 ClientClosed)."""


_BY_CODE: Dict[int, Type[BlipMQError]] = {
    200: AuthError,
    300: InvalidTopic,
    301: InvalidArgument,
    303: UnsupportedQos,
    304: InvalidHeader,
    400: PayloadTooLarge,
    402: QueueFull,
    404: HeadersTooLarge,
    600: ConnectError,
    601: TimeoutError,
    602: ConnectionClosed,
    603: ClientClosed,
}


def error_from_code(code: int, name: str, message: str) -> BlipMQError:
    """The exception for a wire code (used by the native module)."""
    return _BY_CODE.get(code, BlipMQError)(message, code, name)
