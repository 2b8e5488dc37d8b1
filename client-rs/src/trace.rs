//! W3C trace context (`traceparent`, `tracestate`) carried in headers, so a
//! trace can follow a message from its publisher to every subscriber.
//!
//! The header helpers are always there; with the `opentelemetry` feature the
//! client also injects the current OpenTelemetry span's context on publish
//! and turns a received message's headers back into a context.

#[cfg(feature = "opentelemetry")]
use blipmq_protocol::headers::TRACESTATE;
use blipmq_protocol::headers::{trace_id, TRACEPARENT};

use crate::headers::Headers;
use crate::message::Message;

impl Message {
    /// The message's `traceparent` header, if it carries a valid one.
    pub fn traceparent(&self) -> Option<&str> {
        let value = self.headers().get_str(TRACEPARENT)?;
        trace_id(value.as_bytes()).map(|_| value)
    }

    /// The trace id (32 lowercase hex characters) of the message's
    /// `traceparent`, if any.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent().and_then(|v| trace_id(v.as_bytes()))
    }

    /// The publisher's span as a remote parent: make it the parent of the
    /// consumer's span to continue the trace. Empty when the message carries
    /// no valid `traceparent`.
    #[cfg(feature = "opentelemetry")]
    pub fn trace_context(&self) -> opentelemetry::Context {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let parsed = self.traceparent().and_then(|value| {
            let mut parts = value.split('-').skip(1);
            let trace = TraceId::from_hex(parts.next()?).ok()?;
            let span = SpanId::from_hex(parts.next()?).ok()?;
            let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
            let state = self
                .headers()
                .get_str(TRACESTATE)
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default();
            Some(SpanContext::new(
                trace,
                span,
                TraceFlags::new(flags),
                true,
                state,
            ))
        });
        match parsed {
            Some(span_context) => {
                opentelemetry::Context::new().with_remote_span_context(span_context)
            }
            None => opentelemetry::Context::new(),
        }
    }
}

/// Add `traceparent` (and `tracestate`) for the current OpenTelemetry span,
/// unless the caller already set a `traceparent`.
#[cfg(feature = "opentelemetry")]
pub(crate) fn inject_current(headers: &mut Headers) {
    use opentelemetry::trace::TraceContextExt;
    if headers.get(TRACEPARENT).is_some() {
        return;
    }
    let context = opentelemetry::Context::current();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return;
    }
    headers.append(
        TRACEPARENT,
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        ),
    );
    let state = span_context.trace_state().header();
    if !state.is_empty() {
        headers.append(TRACESTATE, state);
    }
}

/// Without the `opentelemetry` feature there is no ambient context to inject.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn inject_current(_headers: &mut Headers) {}
