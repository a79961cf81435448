//! Sending the load: closed loop (each client sends its next request when the previous one is
//! answered) or open loop (requests leave on a fixed schedule and latency counts from the
//! scheduled time, so a stalled server cannot hide its stall by slowing the sender down).
//! Closed loop counts the requests that complete after the warm-up; open loop the requests
//! scheduled after it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_proto::TallyError;
use tokio::sync::Semaphore;

use crate::reply::{Counts, UsageSender};
use crate::summary::Recorder;
use crate::workload::EventSource;

/// When measuring starts and stops; what every client reads.
pub struct Schedule {
    pub measure_from: Instant,
    /// `None` when the run ends on an event count instead.
    pub stop_at: Option<Instant>,
    /// Events still to send in the measured part (`--events`).
    pub events_left: Option<AtomicI64>,
    pub stopped: AtomicBool,
}

impl Schedule {
    /// Claims `events` for one request; false when the run is over.
    fn claim(&self, events: u32, at: Instant) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(stop_at) = self.stop_at {
            if at >= stop_at {
                return false;
            }
        }
        if at >= self.measure_from {
            if let Some(left) = &self.events_left {
                if left.fetch_sub(i64::from(events), Ordering::Relaxed) < i64::from(events) {
                    self.stopped.store(true, Ordering::Relaxed);
                    return false;
                }
            }
        }
        true
    }
}

/// Totals since the start, warm-up included, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub settled: AtomicU64,
    pub rejected: AtomicU64,
    pub errors: AtomicU64,
    pub in_flight: AtomicI64,
}

/// What one request came back with, counted into `recorder`.
fn count_reply(
    recorder: &mut Recorder,
    progress: &Progress,
    events: u32,
    reply: Result<Counts, tonic::Status>,
) {
    recorder.requests += 1;
    recorder.events_sent += u64::from(events);
    match reply {
        Ok(counts) => {
            recorder.duplicates += counts.duplicates;
            recorder.conflicts += counts.conflicts;
            for code in &counts.rejections {
                recorder.reject(code);
            }
            if counts.empty > 0 {
                recorder.error("empty_result", counts.empty);
            }
            recorder.settled += counts.settled;
            progress
                .settled
                .fetch_add(counts.settled, Ordering::Relaxed);
            progress
                .rejected
                .fetch_add(counts.rejections.len() as u64, Ordering::Relaxed);
        }
        Err(status) => {
            let error = TallyError::from_status(&status);
            recorder.error(error.code.as_str(), u64::from(events));
            progress.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One closed-loop client. Returns its measured figures and when its last measured request
/// completed.
pub async fn closed_loop_client(
    mut client: UsageSender,
    mut source: EventSource,
    events_per_request: u32,
    timeout: Duration,
    schedule: Arc<Schedule>,
    progress: Arc<Progress>,
) -> (Recorder, Option<Instant>) {
    let mut measured = Recorder::default();
    let mut warmup = Recorder::default();
    let mut last_completed = None;
    loop {
        let sent_at = Instant::now();
        if !schedule.claim(events_per_request, sent_at) {
            break;
        }
        let request = source.next_request(events_per_request, client.batch_reply());
        progress.in_flight.fetch_add(1, Ordering::Relaxed);
        let reply = client.send(request, timeout).await;
        progress.in_flight.fetch_sub(1, Ordering::Relaxed);
        let completed = Instant::now();
        // Counted by completion: a long request sent during the warm-up that comes back in the
        // measured window carries events settled in that window.
        let recorder = if completed >= schedule.measure_from {
            last_completed = Some(completed);
            &mut measured
        } else {
            &mut warmup
        };
        recorder.record_latency_us(completed.duration_since(sent_at).as_micros() as u64);
        count_reply(recorder, &progress, events_per_request, reply);
    }
    (measured, last_completed)
}

/// One connection's figures in the open loop and when its last measured request completed.
type Shard = Mutex<(Recorder, Option<Instant>)>;

/// The open-loop sender: requests of `events_per_request` events every `interval`, spread over
/// `clients` round robin, at most `in_flight_max` outstanding.
#[allow(clippy::too_many_arguments)]
pub async fn open_loop(
    clients: Vec<UsageSender>,
    mut sources: Vec<EventSource>,
    events_per_request: u32,
    interval: Duration,
    in_flight_max: u32,
    timeout: Duration,
    schedule: Arc<Schedule>,
    progress: Arc<Progress>,
) -> (Recorder, Option<Instant>) {
    let shards: Arc<Vec<Shard>> = Arc::new(
        (0..clients.len())
            .map(|_| Mutex::new((Recorder::default(), None)))
            .collect(),
    );
    let permits = Arc::new(Semaphore::new(in_flight_max as usize));
    let start = Instant::now();
    let mut sequence: u64 = 0;
    loop {
        let scheduled = start + interval.mul_f64(sequence as f64);
        if !schedule.claim(events_per_request, scheduled) {
            break;
        }
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let shard = (sequence % clients.len() as u64) as usize;
        let mut client = clients[shard].clone();
        let request = sources[shard].next_request(events_per_request, client.batch_reply());
        let shards = shards.clone();
        let progress = progress.clone();
        let measuring = scheduled >= schedule.measure_from;
        progress.in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let reply = client.send(request, timeout).await;
            let completed = Instant::now();
            progress.in_flight.fetch_sub(1, Ordering::Relaxed);
            let mut scratch = Recorder::default();
            let mut guard = shards[shard].lock().expect("no panics while holding it");
            let (recorder, last_completed) = &mut *guard;
            let recorder = if measuring {
                *last_completed =
                    Some(last_completed.map_or(completed, |last| last.max(completed)));
                recorder
            } else {
                &mut scratch
            };
            recorder.record_latency_us(completed.duration_since(scheduled).as_micros() as u64);
            count_reply(recorder, &progress, events_per_request, reply);
            drop(permit);
        });
        sequence += 1;
    }
    // Wait for every outstanding request.
    let _all = permits
        .acquire_many(in_flight_max)
        .await
        .expect("the semaphore is never closed");
    let mut total = Recorder::default();
    let mut last = None;
    for shard in shards.iter() {
        let guard = shard.lock().expect("no panics while holding it");
        total.merge(&guard.0);
        last = last.max(guard.1);
    }
    (total, last)
}
