//! Embeds the commit the runner is built from (`RUNNER_BUILD_COMMIT`), so a run records the code
//! that produced it even when the binary runs outside its repository; "unknown" for a build
//! outside a git checkout. (Uncommitted changes are not marked: the script reruns only when HEAD
//! or the index changes, so such a mark would go stale.)

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RUNNER_BUILD_COMMIT={commit}");
    // Rebuild when HEAD moves (commit, checkout) or the index changes (staging, commits).
    for what in ["HEAD", "index"] {
        if let Some(p) = git(&["rev-parse", "--git-path", what]) {
            println!("cargo:rerun-if-changed={}", PathBuf::from(p).display());
        }
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &head])
    {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
