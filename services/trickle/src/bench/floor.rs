//! The hashing floor: argon2id in this process at 1…N threads, the best kept.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum FloorJob {
    Verify,
    Hash,
    VerifyAndUpgrade,
}

/// Which thread counts a floor is measured at.
#[derive(Debug, Clone, Copy)]
pub(super) enum FloorThreads {
    /// 1…N, the best kept (the services' default is one hashing thread per core).
    UpTo(usize),
    /// The services' configured count, for a scaling table.
    Exactly(usize),
}

/// Operations per second of `job` at the given hashing thread counts, each measured for
/// `seconds` after a short warm-up, through the same bounded pool the services use.
pub(super) async fn floor(
    argon2: Argon2Config,
    threads: FloorThreads,
    seconds: Duration,
    password: &str,
    stored: &str,
    job: FloorJob,
) -> anyhow::Result<Floor> {
    let stored = StoredHash::parse(stored, HashFormat::Auto)
        .map_err(|e| anyhow::anyhow!("bench hash does not parse: {e}"))?;
    let counts = match threads {
        FloorThreads::UpTo(cores) => 1..=cores,
        FloorThreads::Exactly(n) => n..=n,
    };
    let threads_measured: Vec<usize> = counts.collect();
    let mut by_threads = Vec::new();
    for &threads in &threads_measured {
        let pool = HashPool::with_priority(
            "bench-floor",
            argon2,
            threads,
            threads,
            trickle_password::HashPriority::Normal,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let warmup = Instant::now() + Duration::from_millis(300);
        let deadline = warmup + seconds;
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..threads * 2 {
            let (pool, stored, password, done) = (
                pool.clone(),
                stored.clone(),
                password.to_owned(),
                Arc::clone(&done),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let begun = Instant::now();
                    if begun >= deadline {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let password = Password::new(password.clone());
                    match job {
                        FloorJob::Verify => pool.verify(password, stored.clone()).await.map(|_| ()),
                        FloorJob::Hash => pool.hash(password).await.map(|_| ()),
                        FloorJob::VerifyAndUpgrade => pool
                            .verify_and_upgrade(password, stored.clone())
                            .await
                            .map(|_| ()),
                    }
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    // Count operations that started inside the window and ended before its end.
                    let ended = Instant::now();
                    if begun >= warmup && ended <= deadline {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.context("floor task panicked")??;
        }
        by_threads.push(done.load(Ordering::Relaxed) as f64 / seconds.as_secs_f64());
    }
    let (best_index, best) =
        by_threads
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, 0.0),
                |best, (i, v)| if v > best.1 { (i, v) } else { best },
            );
    Ok(Floor {
        best_threads: threads_measured[best_index],
        threads: threads_measured,
        per_second_by_threads: by_threads,
        best_per_second: best,
    })
}
