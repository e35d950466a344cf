//! A bounded pool of hashing threads, off the async executor.
//!
//! Password hashing is the most expensive thing Trickle does and is memory-hard: it must not
//! run on the tokio threads (cheap calls would stall behind it) and it must not queue without
//! bound (every queued login holds a connection and memory). Admission is decided before
//! queueing: when `workers + queue_capacity` jobs are already admitted, the caller is told
//! at once ([`PoolError::Saturated`]).

use crate::argon2id::{self, Argon2Config, Scratch};
use crate::{Password, StoredHash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, oneshot};
use trickle_telemetry::metrics::metrics;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// `retry_after`: when the pool expects room again ([`HashPool::retry_after`]).
    #[error("the password hashing queue is full")]
    Saturated { retry_after: std::time::Duration },
    #[error("the password hashing pool has stopped")]
    Stopped,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The hash is in a legacy format or weaker than the configured argon2id: re-hash it
    /// now that we hold the right password.
    pub needs_upgrade: bool,
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send + 'static>;

/// Cheap to clone; all clones share the threads.
#[derive(Clone, Debug)]
pub struct HashPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sender: SyncSender<Job>,
    admission: Arc<Semaphore>,
    config: Argon2Config,
    workers: usize,
    queued: AtomicUsize,
    /// Recent mean time of one job in microseconds (an exponentially weighted average), for
    /// telling refused callers when to come back.
    mean_job_micros: AtomicU64,
    /// The `pool` label of this pool's metrics.
    name: &'static str,
    /// A real argon2id hash of a random password, verified for unknown users so that "no such
    /// user" costs what "wrong password" costs.
    dummy: StoredHash,
}

impl HashPool {
    /// Start `workers` hashing threads (0 = one per core) admitting at most `queue_capacity`
    /// jobs beyond those running.
    pub fn new(
        name: &'static str,
        config: Argon2Config,
        workers: usize,
        queue_capacity: usize,
    ) -> Result<Self, PoolError> {
        Self::with_priority(
            name,
            config,
            workers,
            queue_capacity,
            HashPriority::default(),
        )
    }

    /// A pool whose threads run at `priority` against the process's other threads.
    pub fn with_priority(
        name: &'static str,
        config: Argon2Config,
        workers: usize,
        queue_capacity: usize,
        priority: HashPriority,
    ) -> Result<Self, PoolError> {
        config
            .params()
            .map_err(|e| PoolError::Hashing(format!("invalid argon2 parameters: {e}")))?;
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let (sender, receiver) = sync_channel::<Job>(workers + queue_capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..workers {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("trickle-hash-{index}"))
                .spawn(move || worker_loop(&receiver, priority))
                .map_err(|e| PoolError::Hashing(format!("cannot start hashing thread: {e}")))?;
        }
        let mut scratch = Scratch::default();
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| PoolError::Hashing(e.to_string()))?;
        let dummy_phc = argon2id::hash(&config, &mut scratch, &random)
            .map_err(|e| PoolError::Hashing(e.to_string()))?;
        let dummy = StoredHash::parse(&dummy_phc, crate::HashFormat::Argon2)
            .map_err(|e| PoolError::Hashing(e.to_string()))?;
        let capacity = i64::try_from(workers + queue_capacity).unwrap_or(i64::MAX);
        metrics()
            .hash_queue_capacity
            .with_label_values(&[name])
            .set(capacity);
        Ok(Self {
            inner: Arc::new(Inner {
                sender,
                admission: Arc::new(Semaphore::new(workers + queue_capacity)),
                config,
                workers,
                queued: AtomicUsize::new(0),
                mean_job_micros: AtomicU64::new(0),
                name,
                dummy,
            }),
        })
    }

    pub fn config(&self) -> &Argon2Config {
        &self.inner.config
    }

    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Jobs admitted and not yet finished (running or waiting).
    pub fn in_flight(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Whether a job asked for now would be refused. Callers check this before the work
    /// that leads up to a hash (database reads), so that a flood they cannot serve is turned
    /// away for the price of an atomic read, not of three queries each.
    pub fn is_full(&self) -> bool {
        self.inner.admission.available_permits() == 0
    }

    /// How long a caller refused now should wait before trying again: the time this pool
    /// needs to work through the jobs it has admitted (jobs × recent mean job time ÷
    /// threads), between 100 ms and 10 s. Sent as the refusal's `RetryInfo` (gRPC's
    /// pushback), so that polite clients come back when there is room instead of polling:
    /// under a flood, refusals are what takes the CPU from the hashing.
    pub fn retry_after(&self) -> std::time::Duration {
        let mean = self.inner.mean_job_micros.load(Ordering::Relaxed);
        let jobs = u64::try_from(self.in_flight()).unwrap_or(u64::MAX);
        let workers = u64::try_from(self.inner.workers.max(1)).unwrap_or(1);
        let wait = std::time::Duration::from_micros(jobs.saturating_mul(mean) / workers);
        wait.clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(10),
        )
    }

    /// Hash a new password with the configured argon2id parameters (PHC string).
    pub async fn hash(&self, password: Password) -> Result<String, PoolError> {
        let config = self.inner.config;
        self.run(move |scratch| {
            timed("argon2id", "hash", || {
                argon2id::hash(&config, scratch, password.expose_secret().as_bytes())
            })
            .map_err(|e| PoolError::Hashing(e.to_string()))
        })
        .await?
    }

    /// Check `password` against `stored`.
    pub async fn verify(
        &self,
        password: Password,
        stored: StoredHash,
    ) -> Result<Verification, PoolError> {
        let config = self.inner.config;
        let keep = keep_blocks(&config);
        self.run(move |scratch| {
            let matches = timed(stored.scheme().as_str(), "verify", || {
                stored.verify(scratch, keep, password.expose_secret().as_bytes())
            });
            Verification {
                matches,
                needs_upgrade: matches && stored.needs_upgrade(&config),
            }
        })
        .await
    }

    /// Verify `password` against a dummy hash and discard the answer: the cost of a wrong
    /// password for a user who does not exist.
    pub async fn verify_dummy(&self, password: Password) -> Result<(), PoolError> {
        self.verify(password, self.inner.dummy.clone())
            .await
            .map(|_| ())
    }

    /// Of `candidates` (real stored hashes), the one whose verification takes the median
    /// time, measured here by verifying a random password against each: a refusal that has
    /// no real hash to check verifies this one, so that it costs what checking a real one
    /// does. The median, not the first or the dearest, so that one odd row (an old low cost,
    /// a hash someone raised by hand) does not set the price. `None` for no candidates.
    pub async fn representative(&self, candidates: Vec<StoredHash>) -> Option<StoredHash> {
        let mut random = [0u8; 24];
        getrandom::fill(&mut random).ok()?;
        let probe = Password::new(
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
        let mut timed_candidates = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let config = self.inner.config;
            let keep = keep_blocks(&config);
            let probe = probe.clone();
            let measured = candidate.clone();
            let elapsed = self
                .run(move |scratch| {
                    let started = std::time::Instant::now();
                    let _ = measured.verify(scratch, keep, probe.expose_secret().as_bytes());
                    started.elapsed()
                })
                .await
                .ok()?;
            timed_candidates.push((elapsed, candidate));
        }
        timed_candidates.sort_by_key(|(elapsed, _)| *elapsed);
        let middle = timed_candidates.len() / 2;
        timed_candidates.into_iter().nth(middle).map(|(_, h)| h)
    }

    /// Check a password and, when it matches in a legacy or weak format, re-hash it in the
    /// same trip to the pool.
    pub async fn verify_and_upgrade(
        &self,
        password: Password,
        stored: StoredHash,
    ) -> Result<(Verification, Option<String>), PoolError> {
        let config = self.inner.config;
        let keep = keep_blocks(&config);
        self.run(move |scratch| {
            let secret = password.expose_secret().as_bytes();
            let matches = timed(stored.scheme().as_str(), "verify", || {
                stored.verify(scratch, keep, secret)
            });
            let needs_upgrade = matches && stored.needs_upgrade(&config);
            let upgraded = if needs_upgrade {
                Some(
                    timed("argon2id", "hash", || {
                        argon2id::hash(&config, scratch, secret)
                    })
                    .map_err(|e| PoolError::Hashing(e.to_string()))?,
                )
            } else {
                None
            };
            Ok((
                Verification {
                    matches,
                    needs_upgrade,
                },
                upgraded,
            ))
        })
        .await?
    }

    /// Run `job` on a hashing thread, inside the caller's tracing span.
    async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Scratch) -> T + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.admission)
            .try_acquire_owned()
            .map_err(|_| PoolError::Saturated {
                retry_after: self.retry_after(),
            })?;
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let inner = Arc::clone(&self.inner);
        inner.track(1);
        let boxed: Job = Box::new(move |scratch| {
            let started = std::time::Instant::now();
            let result = span.in_scope(|| job(scratch));
            inner.observe_job(started.elapsed());
            inner.track(-1);
            drop(permit);
            let _ = reply.send(result);
        });
        // The channel holds workers + queue_capacity jobs, the same as the semaphore admits,
        // so a send after admission never blocks the async thread.
        self.inner.sender.try_send(boxed).map_err(|_| {
            self.inner.track(-1);
            PoolError::Stopped
        })?;
        answer.await.map_err(|_| PoolError::Stopped)
    }
}

impl Inner {
    /// Fold one job's duration into the mean (weight 1/8: follows a change of load within
    /// a few dozen jobs). Racing updates may lose one sample; the mean is a hint.
    fn observe_job(&self, took: std::time::Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mean = self.mean_job_micros.load(Ordering::Relaxed);
        let next = if mean == 0 {
            sample
        } else {
            mean - mean / 8 + sample / 8
        };
        self.mean_job_micros.store(next, Ordering::Relaxed);
    }

    /// Count a job in (+1) or out (-1), and publish the depth.
    fn track(&self, delta: isize) {
        let depth = if delta > 0 {
            self.queued.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.queued
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1)
        };
        metrics()
            .hash_queue_depth
            .with_label_values(&[self.name])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}

/// Run one hash or verification and record how long it took, by scheme.
fn timed<T>(scheme: &str, operation: &str, work: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = work();
    metrics()
        .hash_duration
        .with_label_values(&[scheme, operation])
        .observe(started.elapsed().as_secs_f64());
    result
}

fn keep_blocks(config: &Argon2Config) -> usize {
    config.params().map_or(0, |p| p.block_count())
}

/// The nice value of hashing threads under `HashPriority::Nice`, and where `SCHED_IDLE` is
/// refused (a seccomp profile that blocks `sched_setscheduler`): weight 110 against a
/// normal thread's 1024.
const HASH_THREAD_NICENESS: i32 = 10;

/// How hashing threads rank against the service's other threads (`[store] hash_priority`,
/// `[legacy] hash_priority`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashPriority {
    /// Linux `SCHED_IDLE`: every other thread preempts hashing at once, so cheap calls
    /// never wait behind it; hashing gets only the CPU they leave, none while they keep
    /// every core busy.
    #[default]
    Idle,
    /// Nice 10: hashing keeps about a tenth of a contended core, and a cheap call may wait
    /// up to a scheduler slice behind it.
    Nice,
    /// The priority of any thread: for measuring raw hashing (`trickle bench`'s floor).
    Normal,
}

#[cfg(target_os = "linux")]
fn set_this_threads_niceness() {
    // setpriority(PRIO_PROCESS, tid) sets the nice value of one thread on Linux.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), HASH_THREAD_NICENESS) {
        tracing::warn!(
            error = %e,
            "cannot lower the priority of a hashing thread: cheap calls may wait behind hashing"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn set_this_threads_niceness() {
    let _ = HASH_THREAD_NICENESS;
}

/// Hashing threads run under Linux's `SCHED_IDLE` policy, below every normal thread.
///
/// Hashing saturates every core under a login burst, and the cheap calls (`ValidateToken`,
/// `GetUser`) must not wait behind it. A nice value only lowers hashing's share: with EEVDF
/// (Linux 6.6+) a woken tokio thread can still wait up to a base slice for a running hashing
/// thread, and that slice grows with the core count (0.75 ms × (1 + log2 min(cores, 8)):
/// 1.5 ms on 2 cores, 3 ms on 8 or more), as the cheap calls' p99 did on 16 cores. A
/// normal thread that wakes always preempts a `SCHED_IDLE` one at once, and a core running
/// only `SCHED_IDLE` threads counts as idle when the kernel places a waking thread, so
/// hashing gets exactly the CPU the async threads leave, whatever the core count. Refusals
/// must stay cheap for that (a flood of them is async work that hashing yields to): an
/// overloaded store refuses before its queries (docs/BENCHMARKS.md). In a container the
/// policy ranks hashing below the service's own threads only, not below other pods.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    if let Err(refused) = idle {
        tracing::warn!(error = ?refused, "SCHED_IDLE refused for a hashing thread; nice 10 instead");
        set_this_threads_niceness();
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

fn worker_loop(receiver: &Mutex<Receiver<Job>>, priority: HashPriority) {
    match priority {
        HashPriority::Idle => lower_this_threads_priority(),
        HashPriority::Nice => set_this_threads_niceness(),
        HashPriority::Normal => {}
    }
    let mut scratch = Scratch::default();
    loop {
        // Hold the lock only while taking a job, not while hashing.
        let job = match receiver.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(&mut scratch),
            Err(_) => return, // every HashPool handle is gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Argon2Config {
        Argon2Config {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// The promise of `lower_this_threads_priority`: a hashing thread runs under SCHED_IDLE
    /// (policy 5 in field 41 of the kernel's own view of the thread), while the caller's
    /// thread keeps the normal policy (0).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_under_sched_idle() {
        fn policy_of_this_thread() -> u32 {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
            // Fields after the command name (which may hold spaces) start at field 3.
            let after_name = &stat[stat.rfind(')').expect("name") + 2..];
            after_name
                .split(' ')
                .nth(41 - 3)
                .and_then(|policy| policy.parse().ok())
                .expect("policy field")
        }
        let pool = HashPool::new("test", small(), 1, 1).expect("pool");
        let hashing = pool.run(|_| policy_of_this_thread()).await.expect("job");
        assert_eq!(hashing, 5, "SCHED_IDLE");
        assert_eq!(
            policy_of_this_thread(),
            0,
            "the caller's thread is SCHED_OTHER"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn nice_hashing_threads_run_ten_below_the_caller() {
        let pool =
            HashPool::with_priority("test", small(), 1, 1, HashPriority::Nice).expect("pool");
        let ours = rustix::process::getpriority_process(None).expect("own priority");
        let theirs = pool
            .run(|_| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .expect("runs")
            .expect("worker priority");
        // Nice values clamp at 19.
        assert_eq!(theirs, (ours + HASH_THREAD_NICENESS).min(19));
    }

    #[tokio::test]
    async fn a_refusal_says_when_the_admitted_jobs_will_be_done() {
        let pool = HashPool::new("test", small(), 1, 8).expect("pool");
        // Idle: the floor.
        assert_eq!(pool.retry_after(), std::time::Duration::from_millis(100));
        pool.inner.mean_job_micros.store(50_000, Ordering::Relaxed);
        pool.inner.queued.store(8, Ordering::Relaxed);
        // 8 jobs of 50 ms on one thread.
        assert_eq!(pool.retry_after(), std::time::Duration::from_millis(400));
        pool.inner.queued.store(1_000_000, Ordering::Relaxed);
        assert_eq!(pool.retry_after(), std::time::Duration::from_secs(10));
        pool.inner.queued.store(0, Ordering::Relaxed);
        pool.inner.mean_job_micros.store(0, Ordering::Relaxed);
        // A real job moves the mean off zero.
        pool.hash(Password::new("x")).await.expect("hash");
        assert!(pool.inner.mean_job_micros.load(Ordering::Relaxed) > 0);
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let pool = HashPool::new("test", small(), 2, 4).expect("pool");
        let phc = pool
            .hash(Password::new("correct horse"))
            .await
            .expect("hash");
        let stored = StoredHash::parse(&phc, crate::HashFormat::Auto).expect("parse");
        let ok = pool
            .verify(Password::new("correct horse"), stored.clone())
            .await
            .expect("verify");
        assert_eq!(
            ok,
            Verification {
                matches: true,
                needs_upgrade: false
            }
        );
        let bad = pool
            .verify(Password::new("wrong"), stored)
            .await
            .expect("verify");
        assert!(!bad.matches);
        pool.verify_dummy(Password::new("x")).await.expect("dummy");
    }

    #[tokio::test]
    async fn the_representative_hash_is_the_median_cost() {
        let pool = HashPool::new("test", small(), 1, 4).expect("pool");
        // Costs 4, 9, 7: verifying the cost-9 hash takes 32× the cost-4 one, far beyond
        // scheduling noise, so the median is the cost-7 hash whatever the order.
        let hashes: Vec<_> = [4, 9, 7]
            .into_iter()
            .map(|cost| {
                let h = crate::legacy_formats::bcrypt("x", cost).expect("bcrypt");
                StoredHash::parse(&h, crate::HashFormat::Auto).expect("parse")
            })
            .collect();
        let chosen = pool
            .representative(hashes.clone())
            .await
            .expect("a representative");
        assert_eq!(chosen.cost(), hashes[2].cost());
        assert!(pool.representative(Vec::new()).await.is_none());
    }

    #[tokio::test]
    async fn saturation_is_refused_not_queued() {
        let pool = HashPool::new("test", Argon2Config::default(), 1, 1).expect("pool");
        let jobs: Vec<_> = (0..8).map(|_| pool.hash(Password::new("p"))).collect();
        let results = futures_join_all(jobs).await;
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(PoolError::Saturated { .. })))
        );
        assert!(results.iter().filter(|r| r.is_ok()).count() >= 2);
    }

    /// Polls every future once (so each asks for admission before any finishes), then awaits
    /// the ones still pending.
    async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
        let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
        let mut first = Vec::new();
        for f in &mut pinned {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            first.push(match f.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            });
        }
        let mut out = Vec::new();
        for (f, ready) in pinned.into_iter().zip(first) {
            out.push(match ready {
                Some(done) => done,
                None => f.await,
            });
        }
        out
    }
}
