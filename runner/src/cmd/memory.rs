//! Process memory and swap, sampled on a background thread for the whole run (sysinfo: Linux
//! and macOS), so the report shows a timeline, a peak, and per-backend peaks: each sample names
//! the backend that was being built, training (sequential mode) or evaluated when it was taken,
//! so a backend's windows are separable from the others'.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reports::MemorySample;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Resident set size of this process in bytes (0 if the OS does not say).
pub fn rss_bytes() -> u64 {
    let mut sys = System::new();
    let pid = Pid::from_u32(std::process::id());
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, ProcessRefreshKind::nothing().with_memory());
    sys.process(pid).map(|p| p.memory()).unwrap_or(0)
}

/// This process's swapped-out bytes where the OS reports them (Linux: `VmSwap` of
/// /proc/self/status), else `None`.
pub fn process_swap_bytes() -> Option<u64> {
    status_bytes("VmSwap")
}

/// This process's peak resident set size where the OS reports it (Linux: `VmHWM` of
/// /proc/self/status), else `None`.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM")
}

fn status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kb(&status, key)
}

/// The `KEY:  123 kB` line of a /proc status file, in bytes.
fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line[key.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// How swap is measured on this system: the process's own where the OS says, else the growth
/// of the system's used swap since the run started (a machine that already swaps does not fail
/// `max_swap_bytes = 0`).
pub fn swap_source() -> &'static str {
    if process_swap_bytes().is_some() { "process" } else { "system change" }
}

/// No backend is at work alone (loading data, writing, or backends training concurrently).
pub const NO_BACKEND: usize = usize::MAX;

pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    /// Device bytes the training loop last reported (summed over GPU backends).
    pub gpu_bytes: Arc<AtomicU64>,
    /// Index into the backend names of the backend training now, or [`NO_BACKEND`].
    pub active: Arc<AtomicUsize>,
    handle: Option<JoinHandle<Vec<MemorySample>>>,
}

impl MemorySampler {
    /// Starts sampling every 200 ms; `backends` names the indices stored in `active`.
    pub fn start(backends: Vec<String>) -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let gpu_bytes = Arc::new(AtomicU64::new(0));
        let gpu = gpu_bytes.clone();
        let active = Arc::new(AtomicUsize::new(NO_BACKEND));
        let who = active.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut sys = System::new();
            let pid = Pid::from_u32(std::process::id());
            sys.refresh_memory();
            let swap_at_start = sys.used_swap();
            let mut out = Vec::new();
            loop {
                sys.refresh_memory();
                sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, ProcessRefreshKind::nothing().with_memory());
                let swap = process_swap_bytes().unwrap_or_else(|| sys.used_swap().saturating_sub(swap_at_start));
                out.push(MemorySample {
                    t_s: t0.elapsed().as_secs_f64(),
                    rss_bytes: sys.process(pid).map(|p| p.memory()).unwrap_or(0),
                    swap_bytes: swap,
                    gpu_bytes: gpu.load(Ordering::Relaxed),
                    backend: backends.get(who.load(Ordering::Relaxed)).cloned().unwrap_or_default(),
                });
                if flag.load(Ordering::Relaxed) {
                    return out;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        MemorySampler { stop, gpu_bytes, active, handle: Some(handle) }
    }

    pub fn stop(mut self) -> Vec<MemorySample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines_in_bytes() {
        let status = "Name:\trunner\nVmHWM:\t  2000 kB\nVmRSS:\t  1000 kB\nVmSwap:\t    12 kB\nThreads:\t4\n";
        assert_eq!(super::parse_status_kb(status, "VmSwap"), Some(12 * 1024));
        assert_eq!(super::parse_status_kb(status, "VmHWM"), Some(2000 * 1024));
        assert_eq!(super::parse_status_kb("Name:\trunner\n", "VmSwap"), None);
    }
}
