"""TLS: `tls://` addresses and `tls=blipmq.TLS(...)`, against brokers with
certificates made for the session (conftest.py `pki`)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import blipmq


def tls_url(broker) -> str:  # type: ignore[no-untyped-def]
    # The test certificate is for localhost, 127.0.0.1 and ::1.
    return "tls://localhost:" + broker.addr.rsplit(":", 1)[1]


async def refused(addr: str, tls: object, reason: str) -> blipmq.ConnectError:
    """Connecting fails with ConnectError (600) whose message says `reason`."""
    with pytest.raises(blipmq.ConnectError) as caught:
        await blipmq.connect(addr, tls=tls, reconnect=False, connect_timeout=5)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.name) == (600, "ConnectFailed")
    assert reason in str(caught.value), caught.value
    return caught.value


async def test_round_trip_over_tls_with_the_ca(make_tls_broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    broker = make_tls_broker()
    tls = blipmq.TLS(cafile=pki / "ca.pem")
    async with await blipmq.connect(tls_url(broker), tls=tls) as client:
        sub = await client.subscribe("secure.>")
        assert await client.publish("secure.greeting", b"over TLS", qos=1) is not None
        message = await sub.next(timeout=5)
        assert (message.topic, message.payload) == ("secure.greeting", b"over TLS")
    # TLS options make the connection TLS without a tls:// address; the CA
    # may be PEM text (str or bytes), and the IP is in the certificate.
    for cadata in ((pki / "ca.pem").read_text(), (pki / "ca.pem").read_bytes()):
        async with await blipmq.connect(broker.addr, tls=blipmq.TLS(cadata=cadata)) as client:
            await client.flush()


def test_the_blocking_api_takes_the_same_options(make_tls_broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    broker = make_tls_broker()
    with blipmq.connect_sync(broker.addr, tls=blipmq.TLS(cafile=str(pki / "ca.pem"))) as client:
        with client.subscribe("s") as sub:
            client.publish("s", b"sync over TLS")
            assert sub.next(timeout=5).payload == b"sync over TLS"
    with pytest.raises(blipmq.ConnectError) as caught:
        blipmq.connect_sync(broker.addr, tls=blipmq.TLS(cafile=pki / "other-ca.pem"), reconnect=False)
    assert caught.value.code == 600 and "UnknownIssuer" in str(caught.value)


async def test_a_wrong_ca_name_or_expired_certificate_is_refused_with_the_reason(  # type: ignore[no-untyped-def]
    make_tls_broker, pki: Path
) -> None:
    url = tls_url(make_tls_broker())
    await refused(url, blipmq.TLS(cafile=pki / "other-ca.pem"), "UnknownIssuer")
    # The name is checked: the certificate is not for this one.
    wrong_name = blipmq.TLS(cafile=pki / "ca.pem", server_hostname="blipmq.invalid")
    await refused(url, wrong_name, "not valid for name")
    # tls=True trusts only the system's roots, which do not know the test CA.
    await refused(url, True, "")
    expired = make_tls_broker(cert="expired")
    await refused(tls_url(expired), blipmq.TLS(cafile=pki / "ca.pem"), "expired")


async def test_plaintext_and_tls_that_do_not_match_say_so(  # type: ignore[no-untyped-def]
    make_tls_broker, broker, pki: Path
) -> None:
    secure = make_tls_broker()
    await refused(secure.addr, None, "speaks TLS")
    await refused(tls_url(broker), blipmq.TLS(cafile=pki / "ca.pem"), "does not speak TLS")


async def test_mutual_tls_needs_the_client_certificate(make_tls_broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    url = tls_url(make_tls_broker(client_ca=True))
    identified = blipmq.TLS(cafile=pki / "ca.pem", certfile=pki / "client.pem", keyfile=pki / "client.key")
    async with await blipmq.connect(url, tls=identified) as client:
        await client.flush()
    # As ssl's load_cert_chain: without a keyfile the key is in the certfile.
    both = pki / "client-and-key.pem"
    both.write_bytes((pki / "client.pem").read_bytes() + (pki / "client.key").read_bytes())
    async with await blipmq.connect(url, tls=blipmq.TLS(cafile=pki / "ca.pem", certfile=both)) as client:
        await client.flush()
    await refused(url, blipmq.TLS(cafile=pki / "ca.pem"), "CertificateRequired")
    stranger = blipmq.TLS(cafile=pki / "ca.pem", certfile=pki / "stranger.pem", keyfile=pki / "stranger.key")
    await refused(url, stranger, "fatal alert")


async def test_options_that_cannot_be_used(make_tls_broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    url = tls_url(make_tls_broker())
    await refused(url, blipmq.TLS(cafile="/nonexistent/ca.pem"), "/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="cafile or cadata"):
        blipmq.TLS(cafile="ca.pem", cadata="...")
    with pytest.raises(ValueError, match="keyfile goes with a certfile"):
        blipmq.TLS(keyfile="client.key")
    with pytest.raises(TypeError, match="cafile must be a path"):
        blipmq.TLS(cafile=7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an ssl.SSLContext"):
        await blipmq.connect(url, tls=ssl.create_default_context())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="blipmq.TLS or a bool"):
        await blipmq.connect(url, tls="yes")  # type: ignore[arg-type]
