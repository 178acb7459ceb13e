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

use crate::{
    analysis::escape::{Escaped, escape},
    export::backoff::{BACKOFF_MIN, Backoff},
};

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

/// The most characters of a Collector's message that a log line quotes.
pub const MESSAGE_CHARS: usize = 200;

/// `HTTP 400: <the Collector's message>`.
fn describe(r: &Response) -> String {
    let message = if r.content_type.contains("protobuf") {
        Status::decode(r.body.as_ref())
            .map(|s| s.message)
            .unwrap_or_default()
    } else {
        String::from_utf8_lossy(&r.body).into_owned()
    };
    let message = quote(&message);
    if message.is_empty() {
        format!("HTTP {}", r.status)
    } else {
        format!("HTTP {}: {message}", r.status)
    }
}

/// A Collector's message for a log line: trimmed, at most `MESSAGE_CHARS` characters (`…` when
/// cut), escaped (a newline in it cannot start a line of its own).
pub fn quote(message: &str) -> String {
    let message = message.trim();
    let mut chars = message.char_indices();
    let cut = chars.nth(MESSAGE_CHARS).map(|(i, _)| i);
    let kept = &message[..cut.unwrap_or(message.len())];
    let mut out = escape(kept).into_owned();
    if cut.is_some() {
        out.push('…');
    }
    out
}

/// `Retry-After`: delay-seconds, or an HTTP-date (IMF-fixdate, RFC 850 or asctime; then the
/// time until it, 0 if past). Anything else (a negative or fractional number, a date that is
/// not one) is `None`: the backoff decides.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is still "much later": capped by the caller.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The waits between retries of one export: the shared backoff (jittered, 100 ms to 5 s), or
/// the Collector's `Retry-After`, jittered too.
#[derive(Debug, Default)]
pub struct RetryWait {
    backoff: Backoff,
    rng: fastrand::Rng,
}

impl RetryWait {
    /// Waits drawing their jitter from `seed` (tests).
    pub fn with_seed(seed: u64) -> Self {
        Self {
            backoff: Backoff::with_rng(fastrand::Rng::with_seed(seed)),
            rng: fastrand::Rng::with_seed(seed.wrapping_add(1)),
        }
    }

    /// How long to wait before the next attempt. A `Retry-After` of at least the backoff's
    /// floor is followed (at most `RETRY_AFTER_MAX`), plus up to a tenth of it drawn at random,
    /// so a fleet told the same by one Collector does not come back in lockstep. A shorter one
    /// (`Retry-After: 0`, a date past) or none gets the next step of the backoff: at least its
    /// floor, jittered, doubling; the exporter cannot be made to spin.
    pub fn wait(&mut self, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) if d >= BACKOFF_MIN => {
                let d = d.min(RETRY_AFTER_MAX);
                let tenth = u64::try_from((d / 10).as_micros()).unwrap_or(u64::MAX);
                d + Duration::from_micros(self.rng.u64(0..=tenth))
            }
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
            log::warn!(
                "otlp {} to {}: {}; {then}",
                self.what,
                self.uri,
                Escaped(why)
            );
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
                "otlp {} to {}: rejected ({}), not retried: {what_happens}",
                self.what,
                self.uri,
                Escaped(status_and_why)
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
                why: "HTTP 400: bad\\nrequest".into()
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
        let secs = |s| Some(Duration::from_secs(s));
        for (value, want) in [
            (" 7 ", secs(7)),
            ("0", secs(0)),
            ("000", secs(0)),
            ("18446744073709551615", secs(u64::MAX)),
            ("99999999999999999999999", secs(u64::MAX)),
            ("Sun, 06 Nov 1994 08:49:47 GMT", secs(10)),
            ("Sunday, 06-Nov-94 08:49:47 GMT", secs(10)),
            ("Sun Nov  6 08:49:47 1994", secs(10)),
            ("Sun, 06 Nov 1994 08:49:27 GMT", secs(0)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", secs(0)),
            (
                "Fri, 31 Dec 9999 23:59:59 GMT",
                secs(253_402_300_799 - 784_111_777),
            ),
            ("soon", None),
            ("-1", None),
            ("+5", None),
            ("1.5", None),
            ("", None),
            ("7 s", None),
            ("Sun, 06 Nov 1994 08:49:47 +0100", None),
            ("Sun, 06 Nov 99999 08:49:47 GMT", None),
            ("Sun, 32 Nov 1994 08:49:47 GMT", None),
        ] {
            assert_eq!(parse_retry_after(value, now), want, "{value:?}");
        }
    }

    #[test]
    fn a_retry_after_is_followed_capped_and_jittered() {
        for seed in 0..32 {
            let mut w = RetryWait::with_seed(seed);
            let d = w.wait(Some(Duration::from_secs(2)));
            assert!(
                (Duration::from_secs(2)..=Duration::from_millis(2200)).contains(&d),
                "{d:?}"
            );
            let d = w.wait(Some(Duration::from_secs(3600)));
            assert!(
                (RETRY_AFTER_MAX..=RETRY_AFTER_MAX + RETRY_AFTER_MAX / 10).contains(&d),
                "capped: {d:?}"
            );
            let d = w.wait(Some(Duration::MAX));
            assert!(d <= RETRY_AFTER_MAX * 11 / 10, "{d:?}");
        }
        let spread: std::collections::BTreeSet<Duration> = (0..16)
            .map(|seed| RetryWait::with_seed(seed).wait(Some(Duration::from_secs(1))))
            .collect();
        assert!(spread.len() >= 12, "a fleet told 1 s: {spread:?}");
    }

    #[test]
    fn retry_after_zero_or_a_date_past_gets_the_jittered_floor_and_never_spins() {
        let now = SystemTime::now();
        let past = httpdate::fmt_http_date(now - Duration::from_secs(3600));
        for value in ["0", past.as_str(), "Thu, 01 Jan 1970 00:00:00 GMT"] {
            let after = parse_retry_after(value, now);
            assert_eq!(after, Some(Duration::ZERO), "{value}");
            // A fleet of 16 agents told the same: each waits at least the floor, no two alike.
            let firsts: std::collections::BTreeSet<Duration> = (0..16)
                .map(|seed| RetryWait::with_seed(seed).wait(after))
                .collect();
            assert!(
                firsts
                    .iter()
                    .all(|d| (BACKOFF_MIN..=crate::export::backoff::FIRST_CEILING).contains(d)),
                "{value}: {firsts:?}"
            );
            assert!(firsts.len() >= 12, "{value}: not jittered: {firsts:?}");
            // Told again and again, one agent backs off: 10 retries take at least 1 s.
            let mut w = RetryWait::with_seed(7);
            let waits: Vec<Duration> = (0..10).map(|_| w.wait(after)).collect();
            assert!(waits.iter().all(|d| *d >= BACKOFF_MIN), "{waits:?}");
            assert!(
                waits.iter().sum::<Duration>() >= Duration::from_secs(1),
                "{waits:?}"
            );
        }
        // No Retry-After at all: the same backoff.
        let mut w = RetryWait::with_seed(1);
        assert!(w.wait(None) >= BACKOFF_MIN);
    }

    #[test]
    fn a_collectors_message_is_quoted_on_one_line_and_bounded() {
        assert_eq!(
            quote("  bad\nrequest\ntracer: error: forged\r\u{1b}[2K \n"),
            "bad\\nrequest\\ntracer: error: forged\\r\\u{1b}[2K"
        );
        let long = "é".repeat(1000);
        let q = quote(&long);
        assert_eq!(q.chars().count(), MESSAGE_CHARS + 1, "{q}");
        assert!(q.ends_with('…'));
        assert_eq!(quote(&"x".repeat(MESSAGE_CHARS)), "x".repeat(MESSAGE_CHARS));
        let r = Ok(Response {
            status: 400,
            content_type: "text/plain".into(),
            body: Bytes::from_static(b"no\ntracer: error: forged\x1b[31m"),
            ..Response::default()
        });
        assert_eq!(
            judge(&r),
            Verdict::Reject {
                why: "HTTP 400: no\\ntracer: error: forged\\u{1b}[31m".into()
            }
        );
    }
}
