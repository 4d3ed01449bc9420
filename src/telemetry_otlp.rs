//! The optional trace exporter. With the `otlp` feature and `telemetry.otlp_endpoint` set, [`layer`]
//! gives the OpenTelemetry layer that [`crate::telemetry::init`] installs beside the log layer: it
//! exports Herald's spans (targets `herald*`, debug and above, whatever `log.level` says; the log lines
//! keep their own filter) over OTLP/HTTP with protobuf. The SDK's batch processor exports from its own
//! thread with a blocking client, so an export never runs on (or waits for) the async runtime, and a
//! collector that is down costs dropped spans, not deliveries. [`TraceExport`] flushes what is buffered
//! when it is dropped, at the end of the process. Without the feature a set endpoint only earns a
//! warning at start-up.

use tracing_subscriber::{Layer, Registry};

use crate::config::TelemetrySettings;

/// A layer of the process's subscriber.
pub(crate) type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The running trace export: flushes buffered spans and stops the exporter when dropped. Hold it for the
/// life of the process.
#[must_use = "dropping it stops the trace export"]
#[derive(Debug, Default)]
pub struct TraceExport {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    /// What to tell the operator once logging is up.
    notice: Option<Notice>,
}

/// Each build constructs the variants it can meet.
#[derive(Debug)]
#[allow(dead_code, reason = "NotBuiltIn without the otlp feature, the others with it")]
enum Notice {
    Exporting { endpoint: String, service_name: String },
    NotBuiltIn,
    Failed(String),
}

impl TraceExport {
    /// Logs whether traces are exported (called once the subscriber is installed).
    pub(crate) fn report(&self) {
        match &self.notice {
            None => {}
            Some(Notice::Exporting { endpoint, service_name }) => {
                tracing::info!(%endpoint, %service_name, "exporting traces over OTLP");
            }
            Some(Notice::NotBuiltIn) => tracing::warn!(
                "telemetry.otlp_endpoint is set, but this binary was built without the `otlp` feature \
                 (cargo build --features otlp): traces are not exported"
            ),
            Some(Notice::Failed(error)) => {
                tracing::warn!(%error, "cannot start the OTLP trace exporter: traces are not exported");
            }
        }
    }
}

impl Drop for TraceExport {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not flush the last traces");
        }
    }
}

/// The OpenTelemetry layer, if the settings ask for one and this build has it.
#[cfg(not(feature = "otlp"))]
pub(crate) fn layer(settings: &TelemetrySettings) -> (Option<BoxedLayer>, TraceExport) {
    let notice = settings.otlp_endpoint.as_ref().map(|_| Notice::NotBuiltIn);
    (None, TraceExport { notice })
}

/// The OpenTelemetry layer, if the settings ask for one and this build has it.
#[cfg(feature = "otlp")]
pub(crate) fn layer(settings: &TelemetrySettings) -> (Option<BoxedLayer>, TraceExport) {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;

    let Some(endpoint) = &settings.otlp_endpoint else {
        return (None, TraceExport::default());
    };
    let endpoint = traces_url(endpoint);
    // The exporter's reqwest client, like the delivery client, runs rustls on the process's provider.
    crate::install_tls_provider();
    let service_name = settings.service_name.clone().unwrap_or_else(binary_name);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            let notice = Some(Notice::Failed(error.to_string()));
            return (None, TraceExport { provider: None, notice });
        }
    };
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name.clone()).build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("herald"))
        .with_filter(exported_spans())
        .boxed();
    let notice = Some(Notice::Exporting { endpoint, service_name });
    (Some(layer), TraceExport { provider: Some(provider), notice })
}

/// Herald's own spans and events, debug and above. Other crates' (the exporter's HTTP client among them)
/// stay out, so exporting can never feed itself.
#[cfg(feature = "otlp")]
fn exported_spans() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new().with_target("herald", tracing::Level::DEBUG)
}

/// The collector's traces URL: `/v1/traces` under the configured base, unless it is there already.
#[cfg_attr(not(feature = "otlp"), allow(dead_code, reason = "used by the otlp feature"))]
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") }
}

/// The running binary's file name (`herald`, `herald-worker`), the default `service.name`.
#[cfg_attr(not(feature = "otlp"), allow(dead_code, reason = "used by the otlp feature"))]
fn binary_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|path| {
            std::path::Path::new(&path).file_stem().map(|stem| stem.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "herald".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_go_to_v1_traces_under_the_endpoint() {
        assert_eq!(traces_url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://collector:4318/"), "http://collector:4318/v1/traces");
        assert_eq!(traces_url("https://c.example/v1/traces"), "https://c.example/v1/traces");
    }

    #[test]
    fn the_endpoint_is_read_from_the_environment_and_checked() {
        let environment = |value: &str| {
            let variables = [("HERALD__TELEMETRY__OTLP_ENDPOINT".to_string(), value.to_string())];
            config::Environment::default().source(Some(variables.into_iter().collect()))
        };
        let nowhere = std::path::Path::new("/nonexistent");
        let settings = crate::config::Settings::load_from(nowhere, None, environment("http://otel:4318"))
            .expect("a valid endpoint");
        assert_eq!(settings.telemetry.otlp_endpoint.as_deref(), Some("http://otel:4318"));
        assert_eq!(settings.telemetry.service_name, None);
        let error = crate::config::Settings::load_from(nowhere, None, environment("otel:4318"))
            .expect_err("not a URL");
        assert!(error.to_string().contains("telemetry.otlp_endpoint"), "{error}");
    }

    #[test]
    fn no_endpoint_no_layer_and_nothing_to_say() {
        let (layer, export) = layer(&TelemetrySettings::default());
        assert!(layer.is_none());
        assert!(export.notice.is_none());
    }

    #[cfg(not(feature = "otlp"))]
    #[test]
    fn an_endpoint_without_the_feature_is_a_warning() {
        let settings =
            TelemetrySettings { otlp_endpoint: Some("http://127.0.0.1:4318".into()), service_name: None };
        let (layer, export) = layer(&settings);
        assert!(layer.is_none());
        let logs = crate::outage::capture_logs(|| export.report());
        assert!(logs.contains("WARN") && logs.contains("without the `otlp` feature"), "{logs}");
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn an_endpoint_with_the_feature_gives_a_layer() {
        let settings = TelemetrySettings {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            service_name: Some("herald-test".into()),
        };
        let (layer, export) = layer(&settings);
        assert!(layer.is_some());
        let logs = crate::outage::capture_logs(|| export.report());
        assert!(logs.contains("exporting traces over OTLP") && logs.contains("herald-test"), "{logs}");
    }
}
