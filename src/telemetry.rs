//! Logging and traces. Identifiers of people and organisations are never logged in clear: code
//! logs [`crate::ident::mask`]ed values only, and request bodies are never logged.
//!
//! Traces: every delivery and every step run has a `tracing` span (see
//! [`crate::pipeline::runtime`] and [`crate::pipeline::task`]); with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set they are also
//! exported over OTLP (HTTP/protobuf) to a collector. Export is off by default.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Default filter for long-running processes.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn,amq_protocol=warn";

/// Service name of exported spans unless `OTEL_SERVICE_NAME` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "qyzmet";

/// The installed telemetry. Dropping it (or [`Telemetry::shutdown`]) exports the spans still
/// buffered; keep it until the process ends.
#[must_use = "buffered spans are exported when it is shut down or dropped"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the buffered spans and stops the exporter (bounded by the SDK's 5 s timeout).
    pub fn shutdown(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "could not export the last spans");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Installs the global subscriber without trace export: `QYZMET_LOG` (env-filter syntax)
/// chooses what is logged, otherwise `default`; `QYZMET_LOG_FORMAT=json` switches to JSON lines
/// for log shippers.
pub fn init(default: &str) {
    let _logging_only = install(default, false);
}

/// [`init`], plus OTLP trace export when the standard variables ask for it
/// ([`export_requested`]). Keep the returned value until the end of the process.
pub fn init_with_export(default: &str) -> Telemetry {
    install(default, true)
}

/// Whether the environment asks for trace export: `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set, and neither `OTEL_SDK_DISABLED=true` nor
/// `OTEL_TRACES_EXPORTER=none`.
pub fn export_requested() -> bool {
    let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty());
    let endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    endpoint
        && var("OTEL_SDK_DISABLED").as_deref() != Some("true")
        && var("OTEL_TRACES_EXPORTER").as_deref() != Some("none")
}

fn install(default: &str, export: bool) -> Telemetry {
    let filter = EnvFilter::try_from_env("QYZMET_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("QYZMET_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour only for a person at a terminal: a file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (provider, failed) = match export.then(export_requested) {
        Some(true) => match tracer_provider() {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        },
        _ => (None, None),
    };
    // The exporter's spans are qyzmet's own (deliveries, steps and the events in them), whatever
    // `QYZMET_LOG` lets through to the log; never the HTTP client's, which would feed itself.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("qyzmet"))
            .with_filter(Targets::new().with_target("qyzmet", LevelFilter::INFO))
    });
    let fmt = tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi).with_writer(std::io::stderr);
    let fmt = if json { fmt.json().boxed() } else { fmt.compact().boxed() };
    let _ = tracing_subscriber::registry().with(otel).with(fmt.with_filter(filter)).try_init();
    if let Some(e) = failed {
        tracing::warn!(error = %e, "OTLP trace export requested but not started");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP (HTTP/protobuf)");
    }
    Telemetry { provider }
}

/// The tracer provider: an OTLP HTTP/protobuf exporter behind the SDK's batch span processor
/// (its own thread). Endpoint, headers, timeout and compression come from the standard
/// `OTEL_EXPORTER_OTLP_*` variables, the batching from `OTEL_BSP_*`, the sampler from
/// `OTEL_TRACES_SAMPLER`; `service.name` is `OTEL_SERVICE_NAME` (or `OTEL_RESOURCE_ATTRIBUTES`),
/// else `qyzmet`.
fn tracer_provider() -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig as _;
    // An https endpoint uses rustls with ring, as the broker and database connections do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Ok(p) =
        std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        && !p.trim().is_empty()
        && p.trim() != "http/protobuf"
    {
        return Err(format!("OTLP protocol {p:?} is not built in: only http/protobuf is"));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    // OTEL_SERVICE_NAME, else a service.name in OTEL_RESOURCE_ATTRIBUTES (the SDK reads both),
    // else qyzmet rather than the SDK's "unknown_service".
    let resource = opentelemetry_sdk::Resource::builder().build();
    let named = resource
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let resource = if named {
        resource
    } else {
        opentelemetry_sdk::Resource::builder().with_service_name(DEFAULT_SERVICE_NAME).build()
    };
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
