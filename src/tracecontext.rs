//! W3C trace context (`traceparent`) of a request: the trace it belongs to from intake to its
//! final Outcome.
//!
//! A request keeps the trace it arrived with, or gets a new one at intake; every message
//! qyzmet sends about it (Outcomes, task messages between pools) carries a `traceparent` of
//! that trace whose parent id is the span that sent it: the current OpenTelemetry span when
//! OTLP export is on, otherwise a fresh random id. The incoming `traceparent` of a delivery
//! becomes the OpenTelemetry parent of its span ([`parent_context`]).

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::pipeline::runtime::is_traceparent;

/// A `traceparent` of the same trace as `parent` (flags kept) with a new parent id: the
/// current OpenTelemetry span's when it belongs to that trace, otherwise a random one. A
/// `parent` that is not a W3C `traceparent` starts a new trace instead.
pub fn child_of(parent: &str) -> String {
    let current = current_span().map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()));
    child_with(parent, current.as_ref().map(|(t, s)| (t.as_str(), s.as_str())))
}

/// [`child_of`] with the current span given as (trace id, span id) in hex, if any.
fn child_with(parent: &str, current: Option<(&str, &str)>) -> String {
    if !is_traceparent(parent) {
        return new_root();
    }
    let mut parts = parent.split('-');
    let (_, trace, parent_span, flags) = (parts.next(), parts.next(), parts.next(), parts.next());
    let (Some(trace), Some(parent_span), Some(flags)) = (trace, parent_span, flags) else {
        return new_root();
    };
    let span = match current {
        Some((t, s)) if t == trace => s.to_owned(),
        _ => loop {
            let s = random_hex::<8>();
            if s != parent_span {
                break s;
            }
        },
    };
    format!("00-{trace}-{span}-{flags}")
}

/// A `traceparent` of a new trace: random trace id and parent id, sampled.
pub fn new_root() -> String {
    format!("00-{}-{}-01", random_hex::<16>(), random_hex::<8>())
}

/// The `traceparent` a request keeps: the one it arrived with, else the current
/// OpenTelemetry span's (the delivery span, a root then, when export is on), else a new trace.
pub fn for_request(incoming: Option<&str>) -> String {
    match incoming.filter(|t| is_traceparent(t)) {
        Some(t) => t.to_owned(),
        None => current_span().map(|sc| format(&sc)).filter(|t| is_traceparent(t)).unwrap_or_else(new_root),
    }
}

/// The OpenTelemetry context whose remote parent is `traceparent` (an empty context when it is
/// not a W3C `traceparent`).
pub fn parent_context(traceparent: &str) -> opentelemetry::Context {
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The current OpenTelemetry span, when the OpenTelemetry layer is installed and a span is
/// current.
fn current_span() -> Option<SpanContext> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

fn format(sc: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// `N` random bytes in lower-case hex, never all zero.
fn random_hex<const N: usize>() -> String {
    use ring::rand::SecureRandom as _;
    let rng = ring::rand::SystemRandom::new();
    let mut bytes = [0u8; N];
    loop {
        if rng.fill(&mut bytes).is_err() {
            // The system generator failed (it does not in practice): fall back to UUID v4 bits.
            for (b, u) in bytes.iter_mut().zip(uuid::Uuid::new_v4().as_bytes().iter().cycle()) {
                *b = *u;
            }
        }
        if bytes.iter().any(|b| *b != 0) {
            return bytes.iter().map(|b| format!("{b:02x}")).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn ids(t: &str) -> (String, String, String) {
        let p: Vec<&str> = t.split('-').collect();
        (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_parent_id() {
        for _ in 0..100 {
            let child = child_of(PARENT);
            assert!(is_traceparent(&child), "{child}");
            let (trace, span, flags) = ids(&child);
            assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(span, "00f067aa0ba902b7");
            assert_eq!(flags, "01");
        }
        let unsampled = child_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(ids(&unsampled).2, "00", "flags are kept");
        assert_ne!(ids(&child_of(PARENT)).1, ids(&child_of(PARENT)).1, "every child has its own id");
    }

    #[test]
    fn a_child_takes_the_current_span_id_only_when_it_is_of_the_same_trace() {
        let same = child_with(PARENT, Some(("4bf92f3577b34da6a3ce929d0e0e4736", "1111111111111111")));
        assert_eq!(same, "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01");
        let other = child_with(PARENT, Some(("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "1111111111111111")));
        assert_eq!(ids(&other).0, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ids(&other).1, "1111111111111111");
    }

    #[test]
    fn new_roots_are_valid_and_distinct() {
        let (a, b) = (new_root(), new_root());
        assert!(is_traceparent(&a) && is_traceparent(&b), "{a} {b}");
        assert_ne!(ids(&a).0, ids(&b).0);
        assert_eq!(ids(&a).2, "01");
    }

    #[test]
    fn a_request_keeps_a_valid_incoming_traceparent_and_otherwise_gets_a_new_trace() {
        assert_eq!(for_request(Some(PARENT)), PARENT);
        let fresh = for_request(None);
        assert!(is_traceparent(&fresh), "{fresh}");
        assert_ne!(ids(&fresh).0, ids(PARENT).0);
        let from_garbage = for_request(Some("00-nonsense"));
        assert!(is_traceparent(&from_garbage), "{from_garbage}");
        assert!(is_traceparent(&child_of("garbage")), "a broken parent starts a new trace");
    }

    #[test]
    fn with_the_opentelemetry_layer_a_delivery_span_continues_the_trace_and_outcomes_name_it() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::{Layer as _, filter::LevelFilter, filter::Targets};
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        // As telemetry::init_with_export installs it: behind a per-layer filter.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(Targets::new().with_target("qyzmet", LevelFilter::INFO));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("delivery");
            span.set_parent(parent_context(PARENT)).expect("the layer takes the parent");
            let _entered = span.enter();
            let own = span.context().span().span_context().clone();
            assert_eq!(own.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736", "the incoming trace");
            assert_ne!(own.span_id().to_string(), "00f067aa0ba902b7");
            let child = child_of(PARENT);
            assert_eq!(ids(&child), (own.trace_id().to_string(), own.span_id().to_string(), "01".into()));
            // A request without a traceparent keeps the trace its delivery span started.
            let root = tracing::info_span!("delivery");
            let _in_root = root.enter();
            let kept = for_request(None);
            let root_cx = root.context().span().span_context().clone();
            assert_eq!(ids(&kept).0, root_cx.trace_id().to_string());
            assert_eq!(ids(&kept).1, root_cx.span_id().to_string());
        });
    }

    #[test]
    fn the_parent_context_is_the_remote_span_of_the_traceparent() {
        let cx = parent_context(PARENT);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote());
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
        assert!(!parent_context("garbage").span().span_context().is_valid());
    }
}
