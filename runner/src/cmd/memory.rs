//! Process memory and swap, sampled on a background thread for the whole run (sysinfo: Linux
//! and macOS), so the report shows a timeline and a peak.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    /// Device bytes the training loop last reported (summed over GPU backends).
    pub gpu_bytes: Arc<AtomicU64>,
    handle: Option<JoinHandle<Vec<MemorySample>>>,
}

impl MemorySampler {
    pub fn start() -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let gpu_bytes = Arc::new(AtomicU64::new(0));
        let gpu = gpu_bytes.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut sys = System::new();
            let pid = Pid::from_u32(std::process::id());
            let mut out = Vec::new();
            loop {
                sys.refresh_memory();
                sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, ProcessRefreshKind::nothing().with_memory());
                out.push(MemorySample {
                    t_s: t0.elapsed().as_secs_f64(),
                    rss_bytes: sys.process(pid).map(|p| p.memory()).unwrap_or(0),
                    swap_bytes: sys.used_swap(),
                    gpu_bytes: gpu.load(Ordering::Relaxed),
                });
                if flag.load(Ordering::Relaxed) {
                    return out;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        MemorySampler { stop, gpu_bytes, handle: Some(handle) }
    }

    pub fn stop(mut self) -> Vec<MemorySample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}
