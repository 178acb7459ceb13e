//! Records as OTLP log records: an output sink (`crate::export::output::Sink`) that encodes each record
//! (`wire::LogEncoder`) into the batch it is building, and a task that POSTs batches to
//! `/v1/logs`, retrying what may succeed later.
//!
//! The event loop only appends to a buffer; after each loop step (`Sink::flush`), or at 512
//! records, the buffer goes to the task. The task joins what arrives into requests of up to
//! 512 records, sent when full or 1 s after their first record, one at a time. A request that
//! gets no answer or a 429/502/503/504 is sent again after a backoff (100 ms doubling to 5 s,
//! or the Collector's `Retry-After`); meanwhile records wait. At most 16,384 records wait in
//! all (`QUEUE_RECORDS`): past that a new record is dropped. A request the Collector rejects
//! (any other status) is dropped, as are the records a 2xx answer says it rejected (partial
//! success). At exit the task gets until the exit deadline (1.5 s after the signal) to deliver what it holds. Every
//! record dropped, here or at exit, is counted in `dropped` (`stats.output_dropped`).
use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use hyper::{Uri, body::Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use tokio::{
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, sleep_until},
};

use super::{
    http::{Reporter, RetryWait, Transport, Verdict, judge, quote},
    wire::{Envelope, LogEncoder},
};
use crate::{
    export::output::{Closing, Sink, closing},
    export::record::Record,
};

/// Records held at most: those being batched, waiting for the task, and in the request being
/// sent (or retried).
pub const QUEUE_RECORDS: usize = 16_384;
/// Records per request at most.
pub const BATCH_RECORDS: usize = 512;
/// How long the first record of a request waits for others.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);

/// Counts the sink and its task share.
#[derive(Debug, Default)]
struct Shared {
    /// Records handed to the task and neither delivered nor dropped yet.
    queued: AtomicUsize,
    /// Records dropped: queue full, rejected, or undelivered at exit.
    dropped: AtomicU64,
    /// The last request was not answered, or answered "retry": from then until one is delivered.
    down: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// `n` queued records are done with; `lost` of them were not delivered.
    fn settle(&self, n: usize, lost: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
    }
}

/// Encoded `ScopeLogs.log_records` entries.
#[derive(Debug, Default)]
struct Chunk {
    bytes: Vec<u8>,
    records: usize,
}

pub struct LogSink {
    encoder: LogEncoder,
    /// The records of this loop step, not handed to the task yet.
    chunk: Chunk,
    /// Unbounded as a channel; bounded in records by `Shared::queued`.
    tx: Option<mpsc::UnboundedSender<Chunk>>,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    uri: Uri,
}

impl LogSink {
    /// Starts the delivery task (needs a tokio runtime): POSTs to `uri` through `transport`.
    pub fn start<T: Transport>(transport: T, uri: Uri, envelope: Envelope) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(deliver(
            transport,
            uri.clone(),
            envelope,
            rx,
            shared.clone(),
        ));
        Self {
            encoder: LogEncoder::default(),
            chunk: Chunk::default(),
            tx: Some(tx),
            shared,
            task: Some(task),
            uri,
        }
    }

    /// Hands the records of this step to the task.
    fn ship(&mut self) {
        if self.chunk.records == 0 {
            return;
        }
        let chunk = std::mem::take(&mut self.chunk);
        let n = chunk.records;
        self.shared.queued.fetch_add(n, Ordering::Relaxed);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        if !sent {
            self.shared.settle(n, n);
        }
    }
}

impl Sink for LogSink {
    /// Lines are not exported: only records (`send_record`).
    fn send(&mut self, _line: &bytes::Bytes) -> io::Result<()> {
        Ok(())
    }

    fn send_record(&mut self, record: &Record<'_>, line: &bytes::Bytes) -> io::Result<()> {
        if matches!(record, Record::Stats(_)) {
            return Ok(());
        }
        let held = self.shared.queued.load(Ordering::Relaxed) + self.chunk.records;
        if self.tx.is_none() || held >= QUEUE_RECORDS {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        if self
            .encoder
            .append(record, line, now, &mut self.chunk.bytes)
        {
            self.chunk.records += 1;
            if self.chunk.records >= BATCH_RECORDS {
                self.ship();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ship();
        Ok(())
    }

    fn failing(&self) -> bool {
        self.shared.down.load(Ordering::Relaxed)
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        format!("otlp {}", self.uri)
    }

    fn takes_stats(&self) -> bool {
        false
    }

    fn close(&mut self, deadline: Instant) -> Option<Closing> {
        self.ship();
        self.tx = None; // the task sends what it holds at once, then ends
        let task = self.task.take()?;
        let shared = self.shared.clone();
        Some(closing(task, deadline, move || {
            // What the task still holds is lost, and counted.
            let left = shared.queued.swap(0, Ordering::Relaxed);
            shared.dropped.fetch_add(left as u64, Ordering::Relaxed);
            if left > 0 {
                log::warn!(
                    "otlp logs: {left} records not delivered by the exit deadline (counted in stats.output_dropped)"
                );
            }
        }))
    }
}

/// The delivery task: batches what the sink hands over and sends each batch until it is
/// delivered or rejected. Ends when the sink is closed and everything is sent.
async fn deliver<T: Transport>(
    transport: T,
    uri: Uri,
    envelope: Envelope,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    shared: Arc<Shared>,
) {
    let mut reporter = Reporter::new("logs", uri.clone());
    let mut batch: Vec<u8> = Vec::new();
    let mut count = 0;
    let mut carry: Option<Chunk> = None;
    let mut open = true;
    loop {
        let mut due = Instant::now() + BATCH_DELAY;
        while count < BATCH_RECORDS {
            let next = match carry.take() {
                Some(c) => Some(c),
                None if !open => None,
                None if count == 0 => rx.recv().await,
                None => tokio::select! {
                    c = rx.recv() => c,
                    () = sleep_until(due) => break,
                },
            };
            let Some(chunk) = next else {
                open = false; // closed: send what is here now
                break;
            };
            if count > 0 && count + chunk.records > BATCH_RECORDS {
                carry = Some(chunk);
                break;
            }
            if count == 0 {
                due = Instant::now() + BATCH_DELAY;
            }
            batch.extend_from_slice(&chunk.bytes);
            count += chunk.records;
        }
        if count == 0 {
            if !open && carry.is_none() {
                return;
            }
            continue;
        }
        let body = Bytes::from(envelope.logs_request(&batch));
        send(&transport, &uri, body, count, &shared, &mut reporter).await;
        batch.clear();
        count = 0;
    }
}

/// Sends one request of `count` records until it is delivered or rejected.
async fn send<T: Transport>(
    transport: &T,
    uri: &Uri,
    body: Bytes,
    count: usize,
    shared: &Shared,
    reporter: &mut Reporter,
) {
    let mut backoff = RetryWait::default();
    loop {
        let result = transport.post(uri, body.clone()).await;
        match judge(&result) {
            Verdict::Delivered => {
                shared.down.store(false, Ordering::Relaxed);
                reporter.delivered();
                let rejected = result
                    .ok()
                    .and_then(|r| ExportLogsServiceResponse::decode(r.body.as_ref()).ok())
                    .and_then(|r| r.partial_success)
                    .filter(|p| p.rejected_log_records > 0);
                let lost = match rejected {
                    Some(p) => {
                        let n = usize::try_from(p.rejected_log_records)
                            .unwrap_or(count)
                            .min(count);
                        let why = format!("HTTP 200, partial success: {}", quote(&p.error_message));
                        reporter.rejected(
                            &why,
                            "those records are dropped and counted in stats.output_dropped",
                        );
                        n
                    }
                    None => 0,
                };
                shared.settle(count, lost);
                return;
            }
            Verdict::Retry { after, why } => {
                shared.down.store(true, Ordering::Relaxed);
                reporter.retrying(
                    &why,
                    "retrying with backoff; records wait (up to 16384, then new ones are dropped and counted in stats.output_dropped)",
                );
                tokio::time::sleep(backoff.wait(after)).await;
            }
            Verdict::Reject { why } => {
                reporter.rejected(
                    &why,
                    "its records are dropped and counted in stats.output_dropped",
                );
                shared.settle(count, count);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, sync::Mutex, time::Duration};

    use opentelemetry_proto::tonic::{
        collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceRequest},
        common::v1::InstrumentationScope,
        resource::v1::Resource,
    };

    use super::*;
    use crate::{
        analysis::clock::WallClock,
        analysis::outcome::{Label, Outcome},
        export::names::ReasonNames,
        export::otlp::http::Response,
        export::record::{Failure, Stats},
    };

    type Answer = Result<Response, String>;

    /// Answers from a script (then 200), keeping what was sent (when, how many records, the
    /// answer).
    #[derive(Clone, Default)]
    struct Fake {
        script: Arc<Mutex<VecDeque<Answer>>>,
        sent: Arc<Mutex<Vec<(Instant, usize, Answer)>>>,
    }

    impl Fake {
        fn answering(script: Vec<Answer>) -> Self {
            Self {
                script: Arc::new(Mutex::new(script.into())),
                ..Self::default()
            }
        }

        /// (time since `t0` in ms, records in the request, status or 0 for no answer).
        fn log(&self, t0: Instant) -> Vec<(u64, usize, u16)> {
            self.sent
                .lock()
                .unwrap()
                .iter()
                .map(|(t, n, r)| {
                    (
                        t.duration_since(t0).as_millis() as u64,
                        *n,
                        r.as_ref().map_or(0, |r| r.status),
                    )
                })
                .collect()
        }
    }

    impl Transport for Fake {
        fn post(
            &self,
            _uri: &Uri,
            body: Bytes,
        ) -> impl std::future::Future<Output = Result<Response, String>> + Send {
            let answer = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Ok(Response {
                    status: 200,
                    ..Response::default()
                }));
            let req = ExportLogsServiceRequest::decode(body.as_ref()).expect("a valid request");
            let n = req.resource_logs[0].scope_logs[0].log_records.len();
            self.sent
                .lock()
                .unwrap()
                .push((Instant::now(), n, answer.clone()));
            async move { answer }
        }
    }

    fn status(status: u16) -> Answer {
        Ok(Response {
            status,
            ..Response::default()
        })
    }

    fn sink(fake: &Fake) -> LogSink {
        let envelope = Envelope::new(&Resource::default(), &InstrumentationScope::default());
        LogSink::start(
            fake.clone(),
            Uri::from_static("http://collector/v1/logs"),
            envelope,
        )
    }

    /// Writes `n` failure records to `sink` as `Output` does (the line, then the record).
    fn write(sink: &mut LogSink, n: usize) {
        let o = Outcome::example("10.0.0.2:80", Label::Refused);
        let reasons = ReasonNames::default();
        let clock = WallClock::with_offset_ns(0);
        for _ in 0..n {
            let r = Record::Failure(Failure::from_outcome(
                &o,
                clock.timestamp(1),
                &reasons,
                None,
            ));
            let mut line = serde_json::to_vec(&r).unwrap();
            line.push(b'\n');
            sink.send_record(&r, &line.into()).unwrap();
        }
    }

    /// Lets the task run until it waits on time.
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    fn delivered(fake: &Fake) -> usize {
        fake.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, r)| r.as_ref().is_ok_and(|r| r.status == 200))
            .map(|(_, n, _)| n)
            .sum()
    }

    #[tokio::test(start_paused = true)]
    async fn records_wait_up_to_a_second_for_a_batch_of_512() {
        let fake = Fake::default();
        let mut s = sink(&fake);
        let t0 = Instant::now();
        write(&mut s, 3);
        s.flush().unwrap();
        write(&mut s, 2);
        s.flush().unwrap();
        write(&mut s, 1200); // shipped by 512 as they are written
        s.flush().unwrap();
        settle().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        // 5 + 1200 records: 512-record requests as soon as they are full, the rest after 1 s.
        let log = fake.log(t0);
        let sizes: Vec<usize> = log.iter().map(|e| e.1).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 1205, "{log:?}");
        assert!(sizes.iter().all(|&n| n <= BATCH_RECORDS), "{log:?}");
        assert_eq!(
            sizes.iter().filter(|&&n| n == BATCH_RECORDS).count(),
            2,
            "{log:?}"
        );
        assert_eq!(
            log.last().unwrap().0,
            1000,
            "the last, partial one after 1 s: {log:?}"
        );
        assert_eq!(s.dropped(), 0);
        assert_eq!(s.shared.queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_answers_are_retried_with_backoff_and_retry_after() {
        let fake = Fake::answering(vec![
            Err("connection refused".into()),
            Err("connection refused".into()),
            status(503),
            Ok(Response {
                status: 429,
                retry_after: Some(Duration::from_secs(3)),
                ..Response::default()
            }),
            status(502),
            status(504),
        ]);
        let mut s = sink(&fake);
        let t0 = Instant::now();
        write(&mut s, 10);
        s.flush().unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        let times: Vec<u64> = fake.log(t0).iter().map(|e| e.0).collect();
        // Sent after 1 s; then the jittered backoff (between 100 ms and a ceiling doubling from
        // 200 ms), 3 s to 3.3 s for the Retry-After, then the backoff again.
        assert_eq!(times.len(), 7, "{times:?}");
        assert_eq!(times[0], 1000, "{times:?}");
        let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, (low, high)) in gaps.iter().zip([
            (100u64, 200u64),
            (100, 400),
            (100, 800),
            (3000, 3300),
            (100, 1600),
            (100, 3200),
        ]) {
            assert!(
                (low.saturating_sub(1)..=high + 1).contains(gap),
                "a wait of {gap} ms, expected {low}..={high}: {times:?}"
            );
        }
        assert_eq!(delivered(&fake), 10);
        assert_eq!(s.dropped(), 0, "everything was delivered in the end");
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_records_are_dropped_and_counted_not_retried() {
        let partial = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "too old".into(),
            }),
        };
        let fake = Fake::answering(vec![
            status(400),
            Ok(Response {
                status: 200,
                body: partial.encode_to_vec().into(),
                ..Response::default()
            }),
        ]);
        let mut s = sink(&fake);
        let t0 = Instant::now();
        write(&mut s, 4);
        s.flush().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        write(&mut s, 5);
        s.flush().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        write(&mut s, 6);
        s.flush().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let log = fake.log(t0);
        assert_eq!(log.len(), 3, "nothing sent twice: {log:?}");
        assert_eq!(
            s.dropped(),
            4 + 2,
            "the 400's four, the partial success' two"
        );
        assert_eq!(
            delivered(&fake),
            5 + 6,
            "the accepted requests held 11 records, 2 of them rejected"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_new_records_and_counts_them() {
        // The Collector is away: nothing leaves the queue.
        let fake = Fake::answering(vec![Err("refused".into()); 10_000]);
        let mut s = sink(&fake);
        for _ in 0..40 {
            write(&mut s, 500);
            s.flush().unwrap();
            settle().await;
        }
        assert_eq!(s.dropped(), 20_000 - QUEUE_RECORDS as u64);
        // Stats records are not log records: neither queued nor dropped.
        let stats = Record::Stats(Stats::default());
        s.send_record(&stats, &bytes::Bytes::from_static(b"{}\n"))
            .unwrap();
        assert_eq!(s.dropped(), 20_000 - QUEUE_RECORDS as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_sends_at_once_and_counts_what_the_deadline_leaves() {
        // Delivered: the closing sink sends without waiting for the batch delay.
        let fake = Fake::default();
        let mut s = sink(&fake);
        let t0 = Instant::now();
        write(&mut s, 7);
        s.close(Instant::now() + Duration::from_secs(2))
            .unwrap()
            .await;
        assert_eq!(fake.log(t0), [(0, 7, 200)]);
        assert_eq!(s.dropped(), 0);
        // Never delivered: at the deadline the records held are counted.
        let fake = Fake::answering(vec![status(503); 1000]);
        let mut s = sink(&fake);
        write(&mut s, 700);
        s.flush().unwrap();
        settle().await;
        let t0 = Instant::now();
        s.close(t0 + Duration::from_secs(2)).unwrap().await;
        assert_eq!(Instant::now().duration_since(t0), Duration::from_secs(2));
        assert_eq!(s.dropped(), 700);
        assert_eq!(delivered(&fake), 0);
        // After closing, new records are dropped and counted.
        write(&mut s, 1);
        assert_eq!(s.dropped(), 701);
    }
}
