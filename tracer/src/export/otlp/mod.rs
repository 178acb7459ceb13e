//! OpenTelemetry export (`--otlp-endpoint`): the records `tracer run` writes (all but `stats`)
//! as OTLP log records, and the metrics of `/metrics` as OTLP metrics, over OTLP/HTTP with
//! protobuf bodies (`Content-Type: application/x-protobuf`), to an OpenTelemetry Collector.
//!
//! - `logs`: an output sink; a bounded queue, batches, retries, a bounded flush at exit, every
//!   record not delivered counted in `stats.output_dropped`.
//! - `metrics`: a cumulative snapshot every `--otlp-metrics-interval` seconds.
//! - `wire`: the log records' protobuf, written without allocating per record.
//! - `http`: the POST, what answers mean, backoff, stderr lines.
pub mod http;
pub mod logs;
pub mod metrics;
pub mod wire;

use clap::Args;
use hyper::Uri;
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
};

/// `--otlp-*`.
#[derive(Args, Debug, Clone, Default)]
pub struct OtlpArgs {
    /// Export records (all but `stats`, as OTLP log records) and the Prometheus metrics over
    /// OTLP/HTTP (protobuf) to the Collector at this base URL, e.g. http://127.0.0.1:4318:
    /// POSTs to URL/v1/logs and URL/v1/metrics. http:// only (no TLS). A URL ending in
    /// /v1/logs or /v1/metrics is taken as its base.
    #[arg(long, value_name = "URL", env = "TRACER_OTLP_ENDPOINT", value_parser = Endpoint::parse)]
    pub otlp_endpoint: Option<Endpoint>,
    /// Seconds between OTLP metrics exports (cumulative values), 0 to 86400; 0 exports no
    /// metrics.
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          env = "TRACER_OTLP_METRICS_INTERVAL", requires = "otlp_endpoint",
          value_parser = crate::analysis::clock::parse_interval)]
    pub otlp_metrics_interval: u64,
    /// An OTLP resource attribute, KEY=VALUE (repeatable; comma-separated in the environment
    /// variable). Replaces the defaults (host.name, service.name=tracer, service.version) and
    /// those of OTEL_RESOURCE_ATTRIBUTES.
    #[arg(long = "otlp-resource", value_name = "KEY=VALUE", env = "TRACER_OTLP_RESOURCE",
          value_delimiter = ',', requires = "otlp_endpoint", value_parser = parse_resource)]
    pub otlp_resource: Vec<(String, String)>,
}

/// The Collector's base URL: `http://HOST:PORT[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Without a trailing slash.
    base: String,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Self, String> {
        const FORM: &str = "expected http://HOST:PORT, e.g. http://127.0.0.1:4318";
        let shown = crate::analysis::escape::escape(s);
        let uri: Uri = s
            .parse()
            .map_err(|e| format!("`{shown}` is not a URL ({e}); {FORM}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`{shown}`: https is not supported (the tracer has no TLS): send to a Collector on this host or a trusted network over http://, and let it forward over TLS; {FORM}"
                ));
            }
            _ => return Err(format!("`{shown}`: {FORM}")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("`{shown}`: no host; {FORM}"));
        }
        if uri.query().is_some() || s.contains('#') {
            return Err(format!(
                "`{shown}`: a query or fragment is not allowed; {FORM}"
            ));
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if authority.contains('@') {
            return Err(format!(
                "`{shown}`: credentials in the URL are not supported; {FORM}"
            ));
        }
        // The URI parser takes any digits as a port, and a connector reads one that does not
        // fit 16 bits as none at all (port 80): a port must be 1 to 65535, or absent (80).
        let host = uri.host().unwrap_or_default();
        if let Some(port) = authority
            .strip_prefix(host)
            .and_then(|rest| rest.strip_prefix(':'))
            && !matches!(port.parse::<u16>(), Ok(1..))
        {
            return Err(format!(
                "`{shown}`: port `{port}` is not in 1..=65535; {FORM}"
            ));
        }
        let mut path = uri.path().trim_end_matches('/');
        for signal in ["/v1/logs", "/v1/metrics", "/v1/traces"] {
            if let Some(base) = path.strip_suffix(signal) {
                path = base;
                break;
            }
        }
        Ok(Self {
            base: format!("http://{authority}{path}"),
        })
    }

    /// `base` + `/v1/<signal>`.
    fn signal(&self, signal: &str) -> Uri {
        format!("{}/v1/{signal}", self.base)
            .parse()
            .expect("a valid URL plus a path is valid")
    }

    pub fn logs(&self) -> Uri {
        self.signal("logs")
    }

    pub fn metrics(&self) -> Uri {
        self.signal("metrics")
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

fn parse_resource(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!(
            "`{s}`: expected KEY=VALUE, e.g. deployment.environment.name=prod"
        )),
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `key1=value1,key2=value2`, values percent-encoded. Malformed
/// entries are skipped.
fn otel_resource_attributes(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The resource attributes: `host.name` (this host's name), `service.name` = `tracer`,
/// `service.version`; then `OTEL_RESOURCE_ATTRIBUTES` (`env`), `OTEL_SERVICE_NAME`; then
/// `--otlp-resource`; a later one replaces an earlier one of the same key.
pub fn resource(
    flags: &[(String, String)],
    env: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let mut attrs: Vec<(String, String)> = vec![
        ("host.name".into(), host),
        ("service.name".into(), "tracer".into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
    ];
    let mut set = |k: &str, v: &str| match attrs.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => attrs.push((k.to_string(), v.to_string())),
    };
    if let Some(s) = env("OTEL_RESOURCE_ATTRIBUTES") {
        for (k, v) in otel_resource_attributes(&s) {
            set(&k, &v);
        }
    }
    if let Some(name) = env("OTEL_SERVICE_NAME").filter(|n| !n.is_empty()) {
        set("service.name", &name);
    }
    for (k, v) in flags {
        set(k, v);
    }
    attrs
}

/// The exporters `tracer run` starts.
pub struct Otlp {
    /// Add to the outputs.
    pub logs: logs::LogSink,
    /// `None` with `--otlp-metrics-interval 0`.
    pub metrics: Option<metrics::MetricsExporter>,
}

/// Starts the exporters of `args` (needs a tokio runtime); `None` without `--otlp-endpoint`.
pub fn start(args: &OtlpArgs) -> Option<Otlp> {
    let endpoint = args.otlp_endpoint.as_ref()?;
    let attrs = resource(&args.otlp_resource, |k| std::env::var(k).ok());
    let resource = Resource {
        attributes: attrs
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(v.clone())),
                }),
                ..KeyValue::default()
            })
            .collect(),
        ..Resource::default()
    };
    let scope = InstrumentationScope {
        name: "tracer".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    };
    let transport = http::Http::new();
    let logs = logs::LogSink::start(
        transport.clone(),
        endpoint.logs(),
        wire::Envelope::new(&resource, &scope),
    );
    let metrics = (args.otlp_metrics_interval > 0)
        .then(|| metrics::MetricsExporter::start(transport, endpoint.metrics(), resource, scope));
    log::info!(
        "exporting OTLP to {endpoint}: logs to {}{}",
        endpoint.logs(),
        if metrics.is_some() {
            format!(
                ", metrics every {} s to {}",
                args.otlp_metrics_interval,
                endpoint.metrics()
            )
        } else {
            String::new()
        }
    );
    Some(Otlp { logs, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_a_base_url_and_add_the_signal_paths() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(e.logs(), "http://127.0.0.1:4318/v1/logs");
        assert_eq!(e.metrics(), "http://127.0.0.1:4318/v1/metrics");
        let e = Endpoint::parse("http://collector:4318/otlp/").unwrap();
        assert_eq!(e.logs(), "http://collector:4318/otlp/v1/logs");
        for (url, port) in [
            ("http://127.0.0.1:65535", Some(65535)),
            ("http://127.0.0.1:1", Some(1)),
            ("http://[::1]:4318", Some(4318)),
            ("http://collector", None),
        ] {
            let e = Endpoint::parse(url).unwrap();
            assert_eq!(e.logs().port_u16(), port, "{url}");
        }
        for signal_url in [
            "http://[::1]:4318/v1/logs",
            "http://[::1]:4318/v1/metrics/",
            "http://[::1]:4318/v1/traces",
        ] {
            let e = Endpoint::parse(signal_url).unwrap();
            assert_eq!(e.logs(), "http://[::1]:4318/v1/logs", "{signal_url}");
            assert_eq!(e.metrics(), "http://[::1]:4318/v1/metrics", "{signal_url}");
        }
    }

    #[test]
    fn bad_endpoints_say_why_and_name_the_flag() {
        for (bad, why) in [
            ("https://collector:4318", "https is not supported"),
            ("collector:4318", "expected http://"),
            ("127.0.0.1:4318", "expected http://"),
            ("ftp://collector", "expected http://"),
            ("http://", ""),
            ("http://c:4318?x=1", "query"),
            ("http://u:p@c:4318", ""),
            ("", "not a URL"),
            ("http://127.0.0.1:99999", "port `99999` is not in 1..=65535"),
            ("http://127.0.0.1:65536", "port `65536` is not in 1..=65535"),
            ("http://127.0.0.1:0", "port `0` is not in 1..=65535"),
            ("http://127.0.0.1:00000", "port `00000`"),
            ("http://127.0.0.1:", "port `` is not in 1..=65535"),
            ("http://[::1]:70000/otlp", "port `70000`"),
            ("http://c:18446744073709551616", "not in 1..=65535"),
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn resource_attributes_layer_defaults_environment_and_flags() {
        let env = |k: &str| match k {
            "OTEL_RESOURCE_ATTRIBUTES" => {
                Some("service.name=ignored, k8s.cluster.name=c%2C1,bad,=x,team=net".into())
            }
            "OTEL_SERVICE_NAME" => Some("tcp-tracer".into()),
            _ => None,
        };
        let flags = vec![("team".to_string(), "sre".to_string())];
        let attrs = resource(&flags, env);
        let get = |k: &str| {
            attrs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert!(!get("host.name").unwrap().is_empty(), "{attrs:?}");
        assert_eq!(get("service.name"), Some("tcp-tracer"));
        assert_eq!(get("service.version"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(get("k8s.cluster.name"), Some("c,1"));
        assert_eq!(get("team"), Some("sre"));
        assert_eq!(attrs.len(), 5, "{attrs:?}");
        let plain = resource(&[], |_| None);
        assert_eq!(get("host.name"), plain.first().map(|(_, v)| v.as_str()));
        assert_eq!(plain[1], ("service.name".into(), "tracer".into()));
    }
}
