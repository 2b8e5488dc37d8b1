//! Frame codec. Reading is two steps: [`check_frame`] says whether a whole
//! frame is buffered (and enforces the size limit before anyone allocates for
//! it), then [`decode`] verifies and parses the FlatBuffers body into a
//! borrowed [`Frame`]. Writing goes through a reusable [`Encoder`].

use bytes::{BufMut, Bytes, BytesMut};
use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};

use crate::fb;
use crate::frame::*;
use crate::{ErrorCode, LENGTH_PREFIX_LEN};

/// Why a buffer does not hold a usable frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not enough bytes yet; read more and try again. Not a protocol error.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete { needed: usize },
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The body is not a valid `Envelope`.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A valid `Envelope` with no body, or a body type this version does not know.
    #[error("unknown frame type {0}")]
    UnknownBody(u8),
}

impl FrameError {
    /// The wire error code a peer reports for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::Incomplete { .. } | FrameError::Malformed(_) => ErrorCode::MalformedFrame,
            FrameError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            FrameError::UnknownBody(_) => ErrorCode::UnsupportedFrame,
        }
    }
}

/// Step one of parsing: is a whole frame at the front of `buf`?
///
/// Returns the total length (prefix included) of the first frame. The length
/// prefix is checked against `max_body_len` as soon as its four bytes are
/// there, so an absurd prefix is refused before any buffer grows for it.
pub fn check_frame(buf: &[u8], max_body_len: usize) -> Result<usize, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX_LEN) else {
        return Err(FrameError::Incomplete {
            needed: LENGTH_PREFIX_LEN - buf.len(),
        });
    };
    let body_len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if body_len > max_body_len {
        return Err(FrameError::TooLarge {
            len: body_len,
            max: max_body_len,
        });
    }
    let total = LENGTH_PREFIX_LEN + body_len;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            needed: total - buf.len(),
        });
    }
    Ok(total)
}

/// Step two of parsing: verify and decode one frame body (the bytes after the
/// length prefix). Never panics, whatever the input.
pub fn decode(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    // The hot frames, checked by hand (see `fast_decode`); anything the
    // fast path does not take goes through the full verifier.
    if let Some(frame) = crate::fast_decode::frame(body) {
        return Ok(frame);
    }
    decode_verified(body)
}

/// [`decode`] through the generic FlatBuffers verifier only (the reference
/// the fast path is tested against).
#[doc(hidden)]
pub fn decode_verified(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    // Our tables nest three deep (Envelope -> body -> header); the bounds
    // refuse pathological buffers cheaply while leaving room for appended
    // fields and for as many headers as a u16 limit can allow.
    let opts = VerifierOptions {
        max_depth: 16,
        max_tables: 70_000,
        max_apparent_size: body.len().saturating_mul(2).max(1024),
        ignore_missing_null_terminator: false,
    };
    let envelope = fb::root_as_envelope_with_opts(&opts, body)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let kind = envelope.body_type();
    let missing = || FrameError::UnknownBody(kind.0);
    let frame = match kind {
        fb::Body::Hello => {
            let t = envelope.body_as_hello().ok_or_else(missing)?;
            Frame::Hello(Hello {
                protocol_version: t.protocol_version(),
                client_name: t.client_name(),
                api_key: t.api_key(),
                drop_notices: t.drop_notices(),
            })
        }
        fb::Body::Welcome => {
            let t = envelope.body_as_welcome().ok_or_else(missing)?;
            Frame::Welcome(Welcome {
                protocol_version: t.protocol_version(),
                server_name: t.server_name().unwrap_or_default(),
                server_version: t.server_version().unwrap_or_default(),
                max_message_size: t.max_message_size(),
                connection_id: t.connection_id(),
                max_headers: t.max_headers(),
                max_header_key_size: t.max_header_key_size(),
                max_headers_size: t.max_headers_size(),
            })
        }
        fb::Body::Publish => {
            let t = envelope.body_as_publish().ok_or_else(missing)?;
            Frame::Publish(Publish {
                publish_id: t.publish_id(),
                topic: t.topic().unwrap_or_default(),
                payload: t.payload().map(|v| v.bytes()).unwrap_or_default(),
                ttl_ms: t.ttl_ms(),
                qos: t.qos(),
                headers: read_headers(t.headers()),
            })
        }
        fb::Body::Confirm => {
            let t = envelope.body_as_confirm().ok_or_else(missing)?;
            Frame::Confirm(Confirm {
                publish_id: t.publish_id(),
                message_id: t.message_id(),
            })
        }
        fb::Body::Subscribe => {
            let t = envelope.body_as_subscribe().ok_or_else(missing)?;
            Frame::Subscribe(Subscribe {
                request_id: t.request_id(),
                pattern: t.pattern().unwrap_or_default(),
                qos: t.qos(),
                durable_name: t.durable_name(),
                queue_group: t.queue_group(),
                ack_timeout_ms: t.ack_timeout_ms(),
                max_deliveries: t.max_deliveries(),
            })
        }
        fb::Body::Subscribed => {
            let t = envelope.body_as_subscribed().ok_or_else(missing)?;
            Frame::Subscribed(Subscribed {
                request_id: t.request_id(),
                subscription_id: t.subscription_id(),
            })
        }
        fb::Body::Unsubscribe => {
            let t = envelope.body_as_unsubscribe().ok_or_else(missing)?;
            Frame::Unsubscribe(Unsubscribe {
                request_id: t.request_id(),
                subscription_id: t.subscription_id(),
                keep_durable: t.keep_durable(),
            })
        }
        fb::Body::Unsubscribed => {
            let t = envelope.body_as_unsubscribed().ok_or_else(missing)?;
            Frame::Unsubscribed(Unsubscribed {
                request_id: t.request_id(),
                subscription_id: t.subscription_id(),
            })
        }
        fb::Body::Delivery => {
            let t = envelope.body_as_delivery().ok_or_else(missing)?;
            let route = t.route();
            Frame::Delivery(Delivery {
                route: Route {
                    subscription_id: route.subscription_id(),
                    delivery_id: route.delivery_id(),
                    delivery_count: route.delivery_count(),
                },
                topic: t.topic().unwrap_or_default(),
                payload: t.payload().map(|v| v.bytes()).unwrap_or_default(),
                message_id: t.message_id(),
                timestamp_ms: t.timestamp_ms(),
                headers: read_headers(t.headers()),
            })
        }
        fb::Body::Ack => {
            let t = envelope.body_as_ack().ok_or_else(missing)?;
            Frame::Ack(Ack {
                subscription_id: t.subscription_id(),
                delivery_id: t.delivery_id(),
                kind: t.kind().0,
                delay_ms: t.delay_ms(),
            })
        }
        fb::Body::Ping => {
            let t = envelope.body_as_ping().ok_or_else(missing)?;
            Frame::Ping { nonce: t.nonce() }
        }
        fb::Body::Pong => {
            let t = envelope.body_as_pong().ok_or_else(missing)?;
            Frame::Pong { nonce: t.nonce() }
        }
        fb::Body::Error => {
            let t = envelope.body_as_error().ok_or_else(missing)?;
            Frame::Error(ErrorFrame {
                code: t.code(),
                message: t.message().unwrap_or_default(),
                request_id: t.request_id(),
            })
        }
        fb::Body::Dropped => {
            let t = envelope.body_as_dropped().ok_or_else(missing)?;
            Frame::Dropped(Dropped {
                subscription_id: t.subscription_id(),
                count: t.count(),
            })
        }
        _ => return Err(missing()),
    };
    Ok(frame)
}

type HeaderVector<'a> = flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::Header<'a>>>;

fn read_headers(headers: Option<HeaderVector<'_>>) -> Vec<Header<'_>> {
    headers
        .map(|list| {
            list.iter()
                .map(|h| Header {
                    key: h.key(),
                    value: h.value().map(|v| v.bytes()).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_headers<'b>(
    b: &mut FlatBufferBuilder<'b>,
    headers: &[Header<'_>],
) -> Option<WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<fb::Header<'b>>>>> {
    if headers.is_empty() {
        return None;
    }
    let offsets: Vec<_> = headers
        .iter()
        .map(|h| {
            let key = b.create_string(h.key);
            let value = b.create_vector(h.value);
            fb::Header::create(
                b,
                &fb::HeaderArgs {
                    key: Some(key),
                    value: Some(value),
                },
            )
        })
        .collect();
    Some(b.create_vector(&offsets))
}

/// A delivery encoded once for every subscriber. The per-subscriber
/// [`Route`] sits at `route_offset` inside `frame` and is replaced on the way
/// out, so fan-out shares the payload bytes instead of copying them.
#[derive(Debug, Clone)]
pub struct SharedDelivery {
    /// The whole frame, length prefix included, with a zeroed route.
    frame: Bytes,
    route_offset: usize,
}

/// Size in bytes of the encoded `DeliveryRoute` struct.
pub const ROUTE_LEN: usize = std::mem::size_of::<fb::DeliveryRoute>();

impl SharedDelivery {
    /// The whole frame with a zeroed route, as it can be stored.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The frame's total length on the wire.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// The bytes before and after the route, for vectored writes:
    /// `head ++ route_bytes(route) ++ tail` is the frame.
    pub fn head_and_tail(&self) -> (&[u8], &[u8]) {
        (
            &self.frame[..self.route_offset],
            &self.frame[self.route_offset + ROUTE_LEN..],
        )
    }

    /// The encoded route struct for one subscriber.
    pub fn route_bytes(route: Route) -> [u8; ROUTE_LEN] {
        fb::DeliveryRoute::new(
            route.subscription_id,
            route.delivery_id,
            route.delivery_count,
        )
        .0
    }

    /// Append the complete frame for one subscriber to `out`.
    pub fn write_to(&self, route: Route, out: &mut BytesMut) {
        // One copy of the whole frame, then the route written over its
        // zeroed place: the head and tail copied apart were two calls to
        // memmove per delivery, a tenth of a broker's time with many
        // subscribers of small messages.
        let route_at = out.len() + self.route_offset;
        out.extend_from_slice(&self.frame);
        out[route_at..route_at + ROUTE_LEN].copy_from_slice(&Self::route_bytes(route));
    }
}

/// Encodes frames, reusing one FlatBuffers builder so that steady-state
/// encoding does not allocate.
pub struct Encoder {
    builder: FlatBufferBuilder<'static>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            // Grown on first use: the hot frames skip the builder, and a
            // broker holds one encoder per connection.
            builder: FlatBufferBuilder::with_capacity(0),
        }
    }

    /// Append `frame`, length prefix included, to `out`.
    pub fn encode(&mut self, frame: &Frame<'_>, out: &mut BytesMut) {
        // The hot frames without headers have a fixed layout (`fast_encode`).
        match frame {
            Frame::Publish(p) if p.headers.is_empty() => {
                return crate::fast_encode::publish(p, out)
            }
            Frame::Delivery(d) if d.headers.is_empty() => {
                return crate::fast_encode::delivery(d, out)
            }
            _ => {}
        }
        self.encode_with_builder(frame, out);
    }

    /// [`Encoder::encode`] through the generic FlatBuffers builder only (the
    /// layout other implementations produce; tests use it as a reference).
    #[doc(hidden)]
    pub fn encode_with_builder(&mut self, frame: &Frame<'_>, out: &mut BytesMut) {
        self.build(frame);
        let body = self.builder.finished_data();
        out.reserve(LENGTH_PREFIX_LEN + body.len());
        out.put_u32_le(body.len() as u32);
        out.put_slice(body);
        self.builder.reset();
    }

    /// Encode `frame` into a new buffer.
    pub fn encode_to_bytes(&mut self, frame: &Frame<'_>) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(frame, &mut out);
        out.freeze()
    }

    /// Encode a delivery once for many subscribers (see [`SharedDelivery`]).
    pub fn shared_delivery(
        &mut self,
        topic: &str,
        payload: &[u8],
        headers: &[Header<'_>],
        message_id: u64,
        timestamp_ms: u64,
    ) -> SharedDelivery {
        let frame = self.encode_to_bytes(&Frame::Delivery(Delivery {
            route: Route::default(),
            topic,
            payload,
            message_id,
            timestamp_ms,
            headers: headers.to_vec(),
        }));
        // We just built this buffer: a header-less delivery has the fixed
        // layout, whose route offset is known; otherwise the route (a
        // required inline struct) is found by hand rather than by verifying
        // the whole frame again.
        let route_offset = if headers.is_empty() {
            crate::fast_encode::DELIVERY_ROUTE_OFFSET
        } else {
            LENGTH_PREFIX_LEN
                + crate::fast_decode::delivery_route_offset(&frame[LENGTH_PREFIX_LEN..])
                    .expect("a freshly encoded delivery has its route")
        };
        SharedDelivery {
            frame,
            route_offset,
        }
    }

    fn build(&mut self, frame: &Frame<'_>) {
        let b = &mut self.builder;
        let (kind, body): (fb::Body, WIPOffset<flatbuffers::UnionWIPOffset>) = match frame {
            Frame::Hello(f) => {
                let client_name = f.client_name.map(|s| b.create_string(s));
                let api_key = f.api_key.map(|s| b.create_string(s));
                let t = fb::Hello::create(
                    b,
                    &fb::HelloArgs {
                        protocol_version: f.protocol_version,
                        client_name,
                        api_key,
                        drop_notices: f.drop_notices,
                    },
                );
                (fb::Body::Hello, t.as_union_value())
            }
            Frame::Welcome(f) => {
                let server_name = Some(b.create_string(f.server_name));
                let server_version = Some(b.create_string(f.server_version));
                let t = fb::Welcome::create(
                    b,
                    &fb::WelcomeArgs {
                        protocol_version: f.protocol_version,
                        server_name,
                        server_version,
                        max_message_size: f.max_message_size,
                        connection_id: f.connection_id,
                        max_headers: f.max_headers,
                        max_header_key_size: f.max_header_key_size,
                        max_headers_size: f.max_headers_size,
                    },
                );
                (fb::Body::Welcome, t.as_union_value())
            }
            Frame::Publish(f) => {
                let headers = write_headers(b, &f.headers);
                let payload = Some(b.create_vector(f.payload));
                let topic = Some(b.create_string(f.topic));
                let t = fb::Publish::create(
                    b,
                    &fb::PublishArgs {
                        publish_id: f.publish_id,
                        topic,
                        payload,
                        ttl_ms: f.ttl_ms,
                        qos: f.qos,
                        headers,
                    },
                );
                (fb::Body::Publish, t.as_union_value())
            }
            Frame::Confirm(f) => {
                let t = fb::Confirm::create(
                    b,
                    &fb::ConfirmArgs {
                        publish_id: f.publish_id,
                        message_id: f.message_id,
                    },
                );
                (fb::Body::Confirm, t.as_union_value())
            }
            Frame::Subscribe(f) => {
                let pattern = Some(b.create_string(f.pattern));
                let durable_name = f.durable_name.map(|s| b.create_string(s));
                let queue_group = f.queue_group.map(|s| b.create_string(s));
                let t = fb::Subscribe::create(
                    b,
                    &fb::SubscribeArgs {
                        request_id: f.request_id,
                        pattern,
                        qos: f.qos,
                        durable_name,
                        queue_group,
                        ack_timeout_ms: f.ack_timeout_ms,
                        max_deliveries: f.max_deliveries,
                    },
                );
                (fb::Body::Subscribe, t.as_union_value())
            }
            Frame::Subscribed(f) => {
                let t = fb::Subscribed::create(
                    b,
                    &fb::SubscribedArgs {
                        request_id: f.request_id,
                        subscription_id: f.subscription_id,
                    },
                );
                (fb::Body::Subscribed, t.as_union_value())
            }
            Frame::Unsubscribe(f) => {
                let t = fb::Unsubscribe::create(
                    b,
                    &fb::UnsubscribeArgs {
                        request_id: f.request_id,
                        subscription_id: f.subscription_id,
                        keep_durable: f.keep_durable,
                    },
                );
                (fb::Body::Unsubscribe, t.as_union_value())
            }
            Frame::Unsubscribed(f) => {
                let t = fb::Unsubscribed::create(
                    b,
                    &fb::UnsubscribedArgs {
                        request_id: f.request_id,
                        subscription_id: f.subscription_id,
                    },
                );
                (fb::Body::Unsubscribed, t.as_union_value())
            }
            Frame::Delivery(f) => {
                let headers = write_headers(b, &f.headers);
                let payload = Some(b.create_vector(f.payload));
                let topic = Some(b.create_string(f.topic));
                let route = fb::DeliveryRoute::new(
                    f.route.subscription_id,
                    f.route.delivery_id,
                    f.route.delivery_count,
                );
                let t = fb::Delivery::create(
                    b,
                    &fb::DeliveryArgs {
                        route: Some(&route),
                        topic,
                        payload,
                        message_id: f.message_id,
                        timestamp_ms: f.timestamp_ms,
                        headers,
                    },
                );
                (fb::Body::Delivery, t.as_union_value())
            }
            Frame::Ack(f) => {
                let t = fb::Ack::create(
                    b,
                    &fb::AckArgs {
                        subscription_id: f.subscription_id,
                        delivery_id: f.delivery_id,
                        kind: fb::AckKind(f.kind),
                        delay_ms: f.delay_ms,
                    },
                );
                (fb::Body::Ack, t.as_union_value())
            }
            Frame::Ping { nonce } => {
                let t = fb::Ping::create(b, &fb::PingArgs { nonce: *nonce });
                (fb::Body::Ping, t.as_union_value())
            }
            Frame::Pong { nonce } => {
                let t = fb::Pong::create(b, &fb::PongArgs { nonce: *nonce });
                (fb::Body::Pong, t.as_union_value())
            }
            Frame::Error(f) => {
                let message = Some(b.create_string(f.message));
                let t = fb::Error::create(
                    b,
                    &fb::ErrorArgs {
                        code: f.code,
                        message,
                        request_id: f.request_id,
                    },
                );
                (fb::Body::Error, t.as_union_value())
            }
            Frame::Dropped(f) => {
                let t = fb::Dropped::create(
                    b,
                    &fb::DroppedArgs {
                        subscription_id: f.subscription_id,
                        count: f.count,
                    },
                );
                (fb::Body::Dropped, t.as_union_value())
            }
        };
        let envelope = fb::Envelope::create(
            b,
            &fb::EnvelopeArgs {
                body_type: kind,
                body: Some(body),
            },
        );
        b.finish(envelope, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame<'_>) {
        let mut enc = Encoder::new();
        let bytes = enc.encode_to_bytes(&frame);
        let total = check_frame(&bytes, 1 << 20).expect("whole frame");
        assert_eq!(total, bytes.len());
        let decoded = decode(&bytes[LENGTH_PREFIX_LEN..total]).expect("decodes");
        assert_eq!(decoded, frame);
    }

    #[test]
    fn every_frame_type_round_trips() {
        round_trip(Frame::Hello(Hello {
            protocol_version: 1,
            client_name: Some("me"),
            api_key: Some("k"),
            drop_notices: true,
        }));
        round_trip(Frame::Hello(Hello::default()));
        round_trip(Frame::Welcome(Welcome {
            protocol_version: 1,
            server_name: "blipmq",
            server_version: "0.1.0",
            max_message_size: 1024,
            connection_id: 7,
            max_headers: 64,
            max_header_key_size: 256,
            max_headers_size: 16384,
        }));
        round_trip(Frame::Publish(Publish {
            publish_id: u64::MAX,
            topic: "a.b",
            payload: &[0, 1, 2, 255],
            ttl_ms: 5,
            qos: 1,
            headers: vec![],
        }));
        round_trip(Frame::Publish(Publish {
            publish_id: 1,
            topic: "h",
            payload: b"",
            ttl_ms: 0,
            qos: 0,
            headers: vec![
                Header {
                    key: "content-type",
                    value: b"text/plain",
                },
                Header {
                    key: "bin",
                    value: &[0, 255, 10],
                },
                Header {
                    key: "bin",
                    value: b"",
                },
            ],
        }));
        round_trip(Frame::Confirm(Confirm {
            publish_id: 1,
            message_id: 2,
        }));
        round_trip(Frame::Subscribe(Subscribe {
            request_id: 3,
            pattern: "a.*.>",
            qos: 0,
            durable_name: Some("d"),
            queue_group: None,
            ack_timeout_ms: 1500,
            max_deliveries: 4,
        }));
        round_trip(Frame::Subscribed(Subscribed {
            request_id: 3,
            subscription_id: 9,
        }));
        round_trip(Frame::Unsubscribe(Unsubscribe {
            request_id: 4,
            subscription_id: 9,
            keep_durable: true,
        }));
        round_trip(Frame::Unsubscribed(Unsubscribed {
            request_id: 4,
            subscription_id: 9,
        }));
        round_trip(Frame::Delivery(Delivery {
            route: Route {
                subscription_id: 9,
                delivery_id: 10,
                delivery_count: 2,
            },
            topic: "a.b",
            payload: b"hello",
            message_id: 11,
            timestamp_ms: 12,
            headers: vec![Header {
                key: "k",
                value: b"v",
            }],
        }));
        round_trip(Frame::Ack(Ack {
            subscription_id: 9,
            delivery_id: 10,
            kind: 0,
            delay_ms: 0,
        }));
        round_trip(Frame::Ack(Ack {
            subscription_id: 9,
            delivery_id: 10,
            kind: AckKind::Nak.as_wire(),
            delay_ms: 250,
        }));
        round_trip(Frame::Ping { nonce: 1 });
        round_trip(Frame::Pong { nonce: 2 });
        round_trip(Frame::Dropped(Dropped {
            subscription_id: 7,
            count: u64::MAX,
        }));
        round_trip(Frame::Error(ErrorFrame {
            code: ErrorCode::InvalidTopic,
            message: "bad",
            request_id: 3,
        }));
    }

    #[test]
    fn shared_delivery_patches_only_the_route() {
        let mut enc = Encoder::new();
        let with_headers = [Header {
            key: "trace",
            value: b"abc",
        }];
        // Both layouts: the fixed one (no headers) and the builder's.
        for headers in [&with_headers[..], &[]] {
            let shared = enc.shared_delivery("t.x", &[42; 100], headers, 5, 6);
            for sub in [1u64, 2, u64::MAX] {
                let route = Route {
                    subscription_id: sub,
                    delivery_id: sub.wrapping_add(1),
                    delivery_count: 3,
                };
                // Appended after what the batch already holds.
                let mut batch = BytesMut::from(&b"earlier"[..]);
                shared.write_to(route, &mut batch);
                assert_eq!(&batch[..7], b"earlier");
                let out = batch.split_off(7);
                assert_eq!(out.len(), shared.len());
                let total = check_frame(&out, 1 << 20).unwrap();
                assert_eq!(total, out.len());
                let body = &out[LENGTH_PREFIX_LEN..total];
                assert_eq!(decode(body).unwrap(), decode_verified(body).unwrap());
                match decode(body).unwrap() {
                    Frame::Delivery(d) => {
                        assert_eq!(d.route, route);
                        assert_eq!(d.topic, "t.x");
                        assert_eq!(d.payload, &[42; 100][..]);
                        assert_eq!(d.message_id, 5);
                        assert_eq!(d.timestamp_ms, 6);
                        assert_eq!(d.headers, headers);
                    }
                    other => panic!("expected a delivery, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn check_frame_reports_incomplete_and_too_large() {
        assert_eq!(
            check_frame(&[1, 0], 100),
            Err(FrameError::Incomplete { needed: 2 })
        );
        assert_eq!(
            check_frame(&[10, 0, 0, 0, 1], 100),
            Err(FrameError::Incomplete { needed: 9 })
        );
        assert_eq!(
            check_frame(&[0xff, 0xff, 0xff, 0xff], 100),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 100
            })
        );
        assert_eq!(check_frame(&[0, 0, 0, 0], 100), Ok(4));
    }

    #[test]
    fn empty_and_unknown_bodies_are_errors_not_panics() {
        assert!(matches!(decode(&[]), Err(FrameError::Malformed(_))));
        // An Envelope with no body at all.
        let mut b = FlatBufferBuilder::new();
        let e = fb::Envelope::create(&mut b, &fb::EnvelopeArgs::default());
        b.finish(e, None);
        assert_eq!(decode(b.finished_data()), Err(FrameError::UnknownBody(0)));
        assert_eq!(
            FrameError::UnknownBody(0).code(),
            ErrorCode::UnsupportedFrame
        );
    }
}
