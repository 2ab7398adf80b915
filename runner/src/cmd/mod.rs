//! One module per subcommand, plus what several of them share.

pub mod bench;
pub mod check;
pub mod detect;
pub mod devices;
pub mod diverge;
pub mod gates;
pub mod map;
pub mod memory;
pub mod model;
pub mod preflight;
pub mod progress;
pub mod report;
pub mod run;

/// Loads a `.weights` file for inference (`map`, `detect`): it must cover every layer of the cfg
/// (a backbone-only file such as yolov4-tiny.conv.29 would evaluate noise), and NaN/Inf values
/// (a diverged training) get a warning.
pub fn load_inference_weights<B: engine::Backend>(net: &engine::network::Network<B>, path: &std::path::Path) -> anyhow::Result<()> {
    let file = engine::weights::read_weights(path, &net.conv_dims(), engine::weights::Extent::All)?;
    if let Some(bad) = engine::weights::nonfinite(&file.layers) {
        eprintln!("warning: {}: {bad}; results from these weights are meaningless (the training that wrote them diverged)", path.display());
    }
    net.set_conv_params(&file.layers);
    Ok(())
}

/// The CPU backend on `RUNNER_CPU_THREADS` threads if that is set, else on `configured` (an
/// experiment's `[backends] cpu_threads`), else one per core. The count changes speed only.
pub fn cpu_backend(configured: Option<usize>) -> anyhow::Result<engine::cpu::CpuBackend> {
    Ok(engine::cpu::CpuBackend::with_threads(cpu_threads(std::env::var("RUNNER_CPU_THREADS").ok().as_deref(), configured)?))
}

/// The number of threads [`cpu_backend`] would run on (for memory estimates; a bad
/// `RUNNER_CPU_THREADS` is reported when the backend is made, and counts as one per core here).
pub fn cpu_thread_count(configured: Option<usize>) -> usize {
    match cpu_threads(std::env::var("RUNNER_CPU_THREADS").ok().as_deref(), configured).unwrap_or(0) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The thread count from the environment's value, else `configured`, else 0 (one per core).
fn cpu_threads(env: Option<&str>, configured: Option<usize>) -> anyhow::Result<usize> {
    match env.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => anyhow::bail!("RUNNER_CPU_THREADS=\"{v}\": expected a number of threads ≥ 1"),
        },
        None => Ok(configured.unwrap_or(0)),
    }
}

/// A new run folder `<out>/<name>-<n>` that did not exist before (never overwrites a run).
pub fn new_run_dir(out: &std::path::Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for n in 1.. {
        let dir = out.join(format!("{name}-{n:03}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    unreachable!("an unbounded range always yields")
}

/// FNV-1a 64-bit, hex: a stable fingerprint of an experiment file's text.
pub fn hash_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The commit this binary was built from (runner/build.rs), whatever directory it runs in.
pub const BUILD_COMMIT: &str = env!("RUNNER_BUILD_COMMIT");

/// The state of the git repository holding `file` at run time: `<commit>`, `<commit>+modified`
/// when the file differs from that commit, or "" when the file is in no repository.
pub fn experiment_commit(file: &std::path::Path) -> String {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else { return String::new() };
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Untracked or changed: the commit alone does not reproduce the experiment.
    match git(&["status", "--porcelain", "--", &name]) {
        Some(s) if s.is_empty() => commit,
        _ => format!("{commit}+modified"),
    }
}

/// Current UTC time as RFC 3339 (no date crate needed for one timestamp).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Tool and library versions for the run record.
pub fn versions() -> std::collections::BTreeMap<String, String> {
    let mut v = std::collections::BTreeMap::new();
    v.insert("runner".into(), env!("CARGO_PKG_VERSION").into());
    v.insert("wgpu".into(), "30".into());
    let rustc = std::process::Command::new("rustc").arg("--version").output().ok().filter(|o| o.status.success());
    v.insert("rustc".into(), rustc.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_else(|| "unknown".into()));
    v.insert("os".into(), format!("{} {}", std::env::consts::OS, std::env::consts::ARCH));
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_threads_come_from_the_environment_then_the_experiment() {
        assert_eq!(super::cpu_threads(None, None).unwrap(), 0);
        assert_eq!(super::cpu_threads(None, Some(3)).unwrap(), 3);
        assert_eq!(super::cpu_threads(Some("2"), Some(3)).unwrap(), 2);
        assert_eq!(super::cpu_threads(Some(" "), Some(3)).unwrap(), 3);
        for bad in ["0", "two", "-1"] {
            let e = super::cpu_threads(Some(bad), None).unwrap_err().to_string();
            assert!(e.contains("RUNNER_CPU_THREADS") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn rfc3339_has_the_right_shape() {
        let s = super::now_rfc3339();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'));
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(super::hash_hex(b""), "cbf29ce484222325");
        assert_ne!(super::hash_hex(b"a"), super::hash_hex(b"b"));
    }
}
