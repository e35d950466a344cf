//! Watching the services' resident memory while a scenario runs.

use super::*;

pub(super) struct MemoryWatch {
    pub(super) before: Vec<(u32, f64)>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) task: Option<tokio::task::JoinHandle<Vec<f64>>>,
}

/// Resident set of a process in MiB (Linux /proc).
pub(super) fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

impl MemoryWatch {
    pub(super) fn start(pids: &[u32]) -> Self {
        let before: Vec<(u32, f64)> = pids
            .iter()
            .map(|&pid| (pid, rss_mib(pid).unwrap_or(0.0)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let task = (!pids.is_empty()).then(|| {
            let (stop, pids) = (Arc::clone(&stop), pids.to_vec());
            tokio::spawn(async move {
                let mut peak = vec![0.0f64; pids.len()];
                while !stop.load(Ordering::Relaxed) {
                    for (p, pid) in peak.iter_mut().zip(&pids) {
                        *p = p.max(rss_mib(*pid).unwrap_or(0.0));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                peak
            })
        });
        Self { before, stop, task }
    }

    pub(super) async fn stop(self) -> Vec<ProcessMemory> {
        self.stop.store(true, Ordering::Relaxed);
        let peaks = match self.task {
            Some(task) => task.await.unwrap_or_default(),
            None => Vec::new(),
        };
        self.before
            .iter()
            .zip(peaks)
            .map(|(&(pid, before), peak)| ProcessMemory {
                pid,
                rss_before_mib: before,
                rss_peak_mib: peak,
            })
            .collect()
    }
}
