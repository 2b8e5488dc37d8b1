"""TLS options: :class:`TLS`, given to :func:`blipmq.connect` as ``tls=``."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Optional, Union

StrPath = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class TLS:
    """How the client speaks TLS to the broker: ``blipmq.connect(addr,
    tls=blipmq.TLS(cafile="ca.pem"))``. The fields are named as Python's
    :mod:`ssl` module names them and mean the same; every one is optional.
    ``tls=True`` is ``TLS()``: the system's trusted roots, and the
    broker's certificate checked against the address's host.

    Args:
        cafile: a PEM file of the CA certificates to trust instead of the
            system's roots (as :func:`ssl.create_default_context`).
        cadata: the same as PEM text (``str``, or ``bytes`` of the text;
            unlike :mod:`ssl`, not DER). Give ``cafile`` or ``cadata``.
        certfile: a PEM file of the client certificate chain, leaf first,
            for a broker that asks for one (mutual TLS).
        keyfile: the client certificate's private key (PEM); without it the
            key is read from ``certfile``, as
            :meth:`ssl.SSLContext.load_cert_chain` does.
        server_hostname: the name the broker's certificate must be for, when
            it is not the address's host (connecting by IP to a certificate
            for a DNS name).

    The files are read when the client connects; reconnects use what was
    read then. Every TLS failure (an untrusted, expired or misnamed
    certificate, a refused client certificate, a plaintext broker, a file
    that cannot be read) raises :class:`ConnectError` (600) saying why.
    """

    cafile: Optional[StrPath] = None
    cadata: Optional[Union[str, bytes]] = None
    certfile: Optional[StrPath] = None
    keyfile: Optional[StrPath] = None
    server_hostname: Optional[str] = None

    def __post_init__(self) -> None:
        for field in ("cafile", "certfile", "keyfile"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{field} must be a path, not {type(value).__name__}")
        if self.cadata is not None and not isinstance(self.cadata, (str, bytes)):
            raise TypeError(f"cadata must be str or bytes, not {type(self.cadata).__name__}")
        if self.server_hostname is not None and not isinstance(self.server_hostname, str):
            raise TypeError(
                f"server_hostname must be a str, not {type(self.server_hostname).__name__}"
            )
        if self.cafile is not None and self.cadata is not None:
            raise ValueError("give cafile or cadata, not both")
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile goes with a certfile")


def tls_option(tls: Union[TLS, bool, None]) -> Optional[TLS]:
    """``connect``'s ``tls`` argument as the native module takes it."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return TLS()
    if isinstance(tls, TLS):
        return tls
    if isinstance(tls, ssl.SSLContext):
        # An SSLContext's client certificate and key cannot be read back.
        raise TypeError(
            "tls takes blipmq.TLS, not an ssl.SSLContext: give the files you "
            "loaded into the context to blipmq.TLS(cafile=..., certfile=..., keyfile=...)"
        )
    raise TypeError(f"tls must be a blipmq.TLS or a bool, not {type(tls).__name__}")
