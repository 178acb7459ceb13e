//! OTLP/HTTP: one POST per export (protobuf body), what an answer means (delivered, retry,
//! rejected), the backoff between retries, and the stderr lines about it.
use std::{
    collections::HashSet,
    future::Future,
    time::{Duration, SystemTime},
};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Request, Uri,
    body::Bytes,
    header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use prost::Message;

use crate::export::backoff::{BACKOFF_MIN, Backoff};

/// How long one export may take before it counts as a connection error (and is retried).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries wait 100 ms, doubling up to 5 s, unless the Collector says how long (`Retry-After`).
/// The longest `Retry-After` followed.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// The part of an answer's body kept (error messages, partial success).
const BODY_LIMIT: usize = 64 * 1024;

/// The Collector's answer to one POST.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Response {
    pub status: u16,
    /// `Retry-After`, if given and readable.
    pub retry_after: Option<Duration>,
    pub content_type: String,
    pub body: Bytes,
}

/// Sends one export. `Err`: no answer (cannot connect, connection lost, timeout), described.
pub trait Transport: Clone + Send + Sync + 'static {
    fn post(&self, uri: &Uri, body: Bytes)
    -> impl Future<Output = Result<Response, String>> + Send;
}

/// hyper's pooled HTTP/1.1 client (keep-alive: one connection serves export after export).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Transport for Http {
    fn post(
        &self,
        uri: &Uri,
        body: Bytes,
    ) -> impl Future<Output = Result<Response, String>> + Send {
        let client = self.client.clone();
        let request = Request::post(uri.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, concat!("tracer/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body));
        async move {
            let request = request.map_err(|e| e.to_string())?;
            let exchange = async {
                let response = client.request(request).await.map_err(|e| chain(&e))?;
                let status = response.status().as_u16();
                let header = |name| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                        .map(str::to_owned)
                };
                let retry_after =
                    header(RETRY_AFTER).and_then(|v| parse_retry_after(&v, SystemTime::now()));
                let content_type = header(CONTENT_TYPE).unwrap_or_default();
                // An unreadable body is no reason to retry an answered export.
                let body = Limited::new(response.into_body(), BODY_LIMIT)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Ok(Response {
                    status,
                    retry_after,
                    content_type,
                    body,
                })
            };
            tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
        }
    }
}

/// An error and its sources: `client error (Connect): tcp connect error: Connection refused`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// What an export's outcome means.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// No answer, or 429/502/503/504: send it again after `after` (the Collector's
    /// `Retry-After`), else after the backoff.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Any other status: sending it again would not help.
    Reject { why: String },
}

/// OTLP/HTTP's rules: 429, 502, 503 and 504 are retryable, as is no answer at all; any other
/// non-2xx status is final.
pub fn judge(result: &Result<Response, String>) -> Verdict {
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            return Verdict::Retry {
                after: None,
                why: e.clone(),
            };
        }
    };
    match r.status {
        200..=299 => Verdict::Delivered,
        429 | 502 | 503 | 504 => Verdict::Retry {
            after: r.retry_after,
            why: describe(r),
        },
        _ => Verdict::Reject { why: describe(r) },
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// `HTTP 400: <the Collector's message>`.
fn describe(r: &Response) -> String {
    let message = if r.content_type.contains("protobuf") {
        Status::decode(r.body.as_ref())
            .map(|s| s.message)
            .unwrap_or_default()
    } else {
        String::from_utf8_lossy(&r.body).into_owned()
    };
    let message: String = message
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if message.is_empty() {
        format!("HTTP {}", r.status)
    } else {
        format!("HTTP {}: {message}", r.status)
    }
}

/// `Retry-After`: seconds, or an HTTP date (then the time until it; 0 if past).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(at.timestamp()).ok()?)
        + Duration::from_nanos(u64::from(at.timestamp_subsec_nanos()));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The waits between retries of one export: the shared backoff (jittered, 100 ms to 5 s), or
/// the Collector's `Retry-After`.
#[derive(Debug, Default)]
pub struct RetryWait {
    backoff: Backoff,
}

impl RetryWait {
    /// How long to wait before the next attempt: the Collector's `Retry-After` (at most
    /// `RETRY_AFTER_MAX`) if it gave one of at least the backoff's floor, else the next step of
    /// the backoff (so `Retry-After: 0` or a date past cannot make the exporter spin).
    pub fn wait(&mut self, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) if d >= BACKOFF_MIN => d.min(RETRY_AFTER_MAX),
            _ => self.backoff.next_wait(),
        }
    }
}

/// The stderr lines of one signal's exports: one warning when exports start failing, one line
/// when they work again, one warning per kind of rejection (then rejections are only counted).
#[derive(Debug)]
pub struct Reporter {
    what: &'static str,
    uri: Uri,
    failing: bool,
    rejected: HashSet<u16>,
}

impl Reporter {
    pub fn new(what: &'static str, uri: Uri) -> Self {
        Self {
            what,
            uri,
            failing: false,
            rejected: HashSet::new(),
        }
    }

    /// An export failed and will be sent again; `then`: what happens meanwhile.
    pub fn retrying(&mut self, why: &str, then: &str) {
        if !std::mem::replace(&mut self.failing, true) {
            log::warn!("otlp {} to {}: {why}; {then}", self.what, self.uri);
        }
    }

    pub fn delivered(&mut self) {
        if std::mem::take(&mut self.failing) {
            log::info!("otlp {} to {}: delivered again", self.what, self.uri);
        }
    }

    /// The Collector refused an export for good: `why`, `what_happens`.
    pub fn rejected(&mut self, status_and_why: &str, what_happens: &str) {
        let status = status_and_why
            .strip_prefix("HTTP ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if self.rejected.insert(status) {
            log::warn!(
                "otlp {} to {}: rejected ({status_and_why}), not retried: {what_happens}",
                self.what,
                self.uri
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Result<Response, String> {
        Ok(Response {
            status,
            ..Response::default()
        })
    }

    #[test]
    fn retryable_statuses_and_no_answer_are_retried_the_rest_is_final() {
        assert_eq!(judge(&answer(200)), Verdict::Delivered);
        assert_eq!(judge(&answer(204)), Verdict::Delivered);
        for s in [429, 502, 503, 504] {
            assert!(matches!(judge(&answer(s)), Verdict::Retry { .. }), "{s}");
        }
        assert!(matches!(
            judge(&Err("connection refused".into())),
            Verdict::Retry { after: None, .. }
        ));
        for s in [400, 401, 403, 404, 413, 500, 501, 301] {
            assert!(matches!(judge(&answer(s)), Verdict::Reject { .. }), "{s}");
        }
    }

    #[test]
    fn retry_after_is_passed_on() {
        let r = Ok(Response {
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
            ..Response::default()
        });
        assert_eq!(
            judge(&r),
            Verdict::Retry {
                after: Some(Duration::from_secs(3)),
                why: "HTTP 503".into()
            }
        );
    }

    #[test]
    fn rejections_say_what_the_collector_said() {
        let status = Status {
            code: 3,
            message: "bad\nrequest".into(),
        };
        let r = Ok(Response {
            status: 400,
            content_type: "application/x-protobuf".into(),
            body: status.encode_to_vec().into(),
            ..Response::default()
        });
        assert_eq!(
            judge(&r),
            Verdict::Reject {
                why: "HTTP 400: bad request".into()
            }
        );
        let r = Ok(Response {
            status: 404,
            content_type: "text/plain".into(),
            body: Bytes::from_static(b"404 page not found\n"),
            ..Response::default()
        });
        assert_eq!(
            judge(&r),
            Verdict::Reject {
                why: "HTTP 404: 404 page not found".into()
            }
        );
        assert_eq!(
            judge(&answer(413)),
            Verdict::Reject {
                why: "HTTP 413".into()
            }
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:27 GMT", now),
            Some(Duration::ZERO),
            "a date past is now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn retries_follow_retry_after_capped_and_never_spin_on_a_zero_one() {
        let mut w = RetryWait::default();
        assert_eq!(w.wait(Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(
            w.wait(Some(Duration::from_secs(3600))),
            RETRY_AFTER_MAX,
            "capped"
        );
        // Retry-After: 0 (or a date past) gets the backoff: at least its floor, growing.
        let first = w.wait(Some(Duration::ZERO));
        assert_eq!(first, BACKOFF_MIN, "the backoff's first step is its floor");
        let waits: Vec<Duration> = (0..8).map(|_| w.wait(Some(Duration::ZERO))).collect();
        assert!(waits.iter().all(|d| *d >= BACKOFF_MIN), "{waits:?}");
        let total: Duration = waits.iter().sum();
        assert!(total >= Duration::from_millis(800), "{waits:?}");
    }
}
