//! Checkpoints of a run folder: `checkpoints/<backend>/<name>_<iteration>.weights` (+ `.state`),
//! `<name>_last.weights` (the latest), `<name>_final.weights`, `<name>_best.weights` (best mAP, by
//! the run's validation), and resuming every backend from an earlier run folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::lane::Slot;
use crate::cmd::progress::Progress;

/// Where a backend's checkpoints live in a run folder: `checkpoints/<backend>/` (`gpu:0` → `gpu_0`).
pub fn dir(run_dir: &Path, backend: &str) -> PathBuf {
    let safe: String = backend.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    run_dir.join("checkpoints").join(safe)
}

/// A backend's checkpoint `<name>_<iteration>.weights` (with its `.state` beside it).
fn path(run_dir: &Path, slot: &Slot, name: &str) -> PathBuf {
    dir(run_dir, &slot.name).join(format!("{name}_{}.weights", slot.lane.iteration()))
}

/// Every backend's checkpoint at its current iteration, with `<name>_last.weights` beside it
/// (Darknet's copy of the latest). Each backend on its own thread: a download, an encoding and
/// file writes that do not depend on each other (half the time with two backends).
pub fn save(slots: &mut [Slot], run_dir: &Path, name: &str, tag: &str, progress: &mut Progress) -> Result<()> {
    let save_one = |slot: &mut Slot| -> Result<PathBuf> {
        let d = dir(run_dir, &slot.name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        let p = path(run_dir, slot, name);
        slot.lane.save_checkpoint(&p, tag).with_context(|| format!("backend {}: saving a checkpoint", slot.name))?;
        copy_one(slot, run_dir, name, "last")?;
        Ok(p)
    };
    let saved: Vec<(String, Result<PathBuf>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = slots.iter_mut().map(|slot| scope.spawn(move || (slot.name.clone(), save_one(slot)))).collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| (String::new(), Err(anyhow::anyhow!("a checkpoint thread panicked"))))).collect()
    });
    // Lines in backend order; the first failure is the error.
    for (backend, r) in saved {
        progress.line(&format!("{backend}: checkpoint {}", r?.display()));
    }
    Ok(())
}

/// Darknet's `<name>_last.weights` / `<name>_final.weights` (`which` = "last", "final"): a copy
/// of each backend's checkpoint at its current iteration.
pub fn copy_as(slots: &[Slot], run_dir: &Path, name: &str, which: &str) -> Result<()> {
    for slot in slots {
        copy_one(slot, run_dir, name, which)?;
    }
    Ok(())
}

fn copy_one(slot: &Slot, run_dir: &Path, name: &str, which: &str) -> Result<()> {
    let fin = dir(run_dir, &slot.name).join(format!("{name}_{which}.weights"));
    std::fs::copy(path(run_dir, slot, name), &fin).with_context(|| format!("writing {}", fin.display()))?;
    Ok(())
}

/// Load every backend's latest checkpoint from an earlier run folder; returns the iteration.
pub fn resume(slots: &mut [Slot], from: &Path, name: &str, tag: &str) -> Result<u64> {
    let mut start = None;
    for slot in slots.iter_mut() {
        let d = dir(from, &slot.name);
        if !d.is_dir() {
            bail!("{}: no checkpoints of backend {} in this run folder (is it a run of this experiment with [train] checkpoint_every?)", d.display(), slot.name);
        }
        let (it, p) = engine::checkpoint::latest(&d, name)?
            .ok_or_else(|| anyhow::anyhow!("{}: no checkpoint `{name}_<iteration>.weights` with its .state", d.display()))?;
        let info = slot.lane.resume(&p).with_context(|| format!("backend {}", slot.name))?;
        if info.tag != tag {
            eprintln!("warning: {}: written by another version of the experiment file (hash {}, now {tag}); resuming anyway", p.display(), info.tag);
        }
        println!("{}: resuming from {} (iteration {it})", slot.name, p.display());
        match start {
            None => start = Some(it),
            Some(s) if s != it => bail!("{}: backends' latest checkpoints are at different iterations ({s} and {it}); resume needs one iteration for all", from.display()),
            Some(_) => {}
        }
    }
    Ok(start.unwrap_or(0))
}
