//! Watching the services' resident memory and CPU time while a scenario runs.

use super::*;

pub(super) struct MemoryWatch {
    pub(super) before: Vec<(u32, f64)>,
    /// CPU time of the watched processes, and of this one, when the scenario started.
    cpu_before: CpuReading,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) task: Option<tokio::task::JoinHandle<Vec<f64>>>,
    /// CPU time (watched processes, this one) when the measured window began and ended,
    /// once [`MemoryWatch::measure_window`] has timed them.
    window_cpu: Arc<std::sync::Mutex<[Option<CpuReading>; 2]>>,
    window_task: Option<tokio::task::JoinHandle<()>>,
}

/// CPU time of the watched processes, and of this one (seconds).
type CpuReading = (CpuTime, f64);

/// Resident set of a process in MiB (Linux /proc).
pub(super) fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU time a set of processes used, in seconds: their hashing threads (`trickle-hash-N`)
/// and everything else.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuTime {
    hashing: f64,
    other: f64,
}

/// Linux's USER_HZ: /proc counts CPU time in hundredths of a second on every architecture
/// Trickle runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of a /proc `stat` line, in seconds (fields 14 and 15, counted after the
/// command name, which may hold spaces and parentheses).
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// A process's CPU time so far, split by thread. The process total includes threads that
/// have exited; the hashing threads live as long as the process.
fn cpu_time(pid: u32) -> CpuTime {
    let total = process_cpu_seconds(&pid.to_string());
    let hashing: f64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with("trickle-hash"))
        })
        .filter_map(|task| {
            stat_cpu_seconds(&std::fs::read_to_string(task.path().join("stat")).ok()?)
        })
        .sum();
    CpuTime {
        hashing,
        other: (total - hashing).max(0.0),
    }
}

fn cpu_time_of(pids: &[u32]) -> CpuTime {
    pids.iter()
        .map(|&pid| cpu_time(pid))
        .fold(CpuTime::default(), |a, b| CpuTime {
            hashing: a.hashing + b.hashing,
            other: a.other + b.other,
        })
}

/// CPU time of the process /proc/`process` (a pid, or `self`), its exited threads included.
fn process_cpu_seconds(process: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/stat"))
        .ok()
        .and_then(|stat| stat_cpu_seconds(&stat))
        .unwrap_or(0.0)
}

fn own_cpu_seconds() -> f64 {
    process_cpu_seconds("self")
}

impl MemoryWatch {
    pub(super) fn start(pids: &[u32]) -> Self {
        let before: Vec<(u32, f64)> = pids
            .iter()
            .map(|&pid| (pid, rss_mib(pid).unwrap_or(0.0)))
            .collect();
        let cpu_before = (cpu_time_of(pids), own_cpu_seconds());
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
        Self {
            before,
            cpu_before,
            stop,
            task,
            window_cpu: Arc::default(),
            window_task: None,
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.before.iter().map(|&(pid, _)| pid).collect()
    }

    /// Time the CPU split to the window of the load that starts now: read when its warm-up
    /// ends and when it ends, so that neither the warm-up nor the calls still draining after
    /// the window (seconds of them under a flood) count against the calls counted.
    pub(super) fn measure_window(&mut self, window: Window) {
        let pids = self.pids();
        if pids.is_empty() {
            return;
        }
        let slots = Arc::clone(&self.window_cpu);
        let read = move |slot: usize| {
            let now = (cpu_time_of(&pids), own_cpu_seconds());
            slots.lock().unwrap_or_else(|p| p.into_inner())[slot] = Some(now);
        };
        self.window_task = Some(tokio::spawn(async move {
            tokio::time::sleep(window.warmup).await;
            read(0);
            tokio::time::sleep(window.measure).await;
            read(1);
        }));
    }

    /// Where the CPU went in the measured window (since [`MemoryWatch::start`] when none was
    /// timed; up to now if the load ended early): `None` without watched processes.
    pub(super) fn cpu(&self) -> Option<CpuShare> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        let [from, to] = *self.window_cpu.lock().unwrap_or_else(|p| p.into_inner());
        let (before, own_before) = from.unwrap_or(self.cpu_before);
        let (now, own_now) = to.unwrap_or_else(|| (cpu_time_of(&pids), own_cpu_seconds()));
        let hashing = now.hashing - before.hashing;
        let other = now.other - before.other;
        let bench = own_now - own_before;
        let total = hashing + other + bench;
        Some(CpuShare {
            hashing_seconds: hashing,
            other_seconds: other,
            bench_seconds: bench,
            hashing_share: (total > 0.0).then(|| hashing / total),
        })
    }

    pub(super) async fn stop(self) -> Vec<ProcessMemory> {
        if let Some(task) = &self.window_task {
            task.abort();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name_whatever_it_holds() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime ...
        let stat =
            "4242 (trickle-hash) 0 (x)) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 50 0 0 39 19";
        assert_eq!(stat_cpu_seconds(stat), Some(3.0));
        assert_eq!(stat_cpu_seconds("4242 (truncated"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        assert!(own_cpu_seconds() > 0.0);
        let split = cpu_time(std::process::id());
        assert!(split.other > 0.0 && split.hashing == 0.0, "{split:?}");
    }
}
