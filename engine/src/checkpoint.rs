//! Training checkpoints: a Darknet `.weights` file (parameters and BN running statistics, `seen`
//! = images trained on, so Darknet itself can load it) next to a `.state` file holding what
//! `.weights` cannot: the iteration and the optimiser's buffers. Resuming from the pair continues
//! training exactly where it stopped: the data loader is a pure function of (seed, batch index),
//! so the caller restarts it at batch `iteration`.
//!
//! `.state` layout (little-endian): magic `DKRS-OPT`, u32 version (1), u64 iteration, u8
//! optimiser (0 SGD, 1 Adam), u64 length + bytes of a caller tag (e.g. an experiment hash), u32
//! tensor count, then per trainable tensor in [`Network::params`] order: u64 length, the SGD
//! momentum buffer (Darknet's `*_updates`), and for Adam the first and second moments; with
//! loss scaling (mixed precision) a trailer: `LSCL`, f32 scale, u32 clean steps, u64 skipped
//! steps (a file without it resumes without a scale of its own).
//!
//! Both files are written to a temporary name and renamed, so an interrupted save never leaves a
//! truncated checkpoint under the final name.

use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::network::Network;
use crate::train::{Optimizer, Trainer};
use crate::weights::{self, Extent, WeightsError};

const MAGIC: &[u8; 8] = b"DKRS-OPT";
/// Starts the loss-scale trailer of a `.state` file.
const LOSS_SCALE_TAG: &[u8; 4] = b"LSCL";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The OS error is part of the message, not a `source()`: printed with its chain (`{:#}`)
    /// it would otherwise appear twice.
    #[error("{file}: {error}")]
    Io {
        file: String,
        error: std::io::Error,
    },
    #[error("{file}: {msg}")]
    Format { file: String, msg: String },
    #[error("{file}: the checkpoint was made with {found:?}, this run trains with {expected:?}")]
    Optimizer { file: String, found: Optimizer, expected: Optimizer },
    #[error("{file}: no `.state` file next to it ({state}); a Darknet .weights alone restarts training, it cannot resume it")]
    MissingState { file: String, state: String },
    #[error("{file}: not written: {what}")]
    NonFinite { file: String, what: String },
}

/// What a `.state` file records besides the buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    pub iteration: u64,
    pub optimizer: Optimizer,
    pub tag: String,
}

/// The `.state` file that belongs to a `.weights` file.
pub fn state_path(weights: &Path) -> PathBuf {
    weights.with_extension("state")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |error| CheckpointError::Io { file: path.display().to_string(), error }
}

/// Write `bytes` under `path` via a temporary file in the same folder and a rename; a failed
/// write (disk full) removes the temporary file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CheckpointError::Io { file: path.display().to_string(), error: e });
    }
    Ok(())
}

impl<B: Backend> Trainer<B> {
    /// Save `weights` (Darknet `.weights`, `seen` = iteration × batch) and its `.state` file.
    /// `tag` is stored and given back by [`Trainer::resume`] (callers use it to check that a
    /// checkpoint belongs to the same experiment).
    /// Nothing is written when a parameter, running statistic or optimiser buffer holds a NaN or
    /// Inf (a checkpoint of a diverged network would only spread the damage).
    pub fn save_checkpoint(&self, weights: &Path, tag: &str) -> Result<(), CheckpointError> {
        let net = &self.net;
        let seen = self.iteration * self.step_images() as u64;
        let params = net.conv_params();
        if let Some(bad) = weights::nonfinite(&params) {
            return Err(CheckpointError::NonFinite { file: weights.display().to_string(), what: bad.to_string() });
        }
        let state = state_path(weights);
        let bytes = self.state_bytes(tag).map_err(|what| CheckpointError::NonFinite { file: state.display().to_string(), what })?;
        // The .weights file is written atomically by write_weights (temporary file + rename).
        weights::write_weights(weights, seen, &net.conv_dims(), &params, None)?;
        write_atomic(&state, &bytes)
    }

    /// The `.state` bytes; an error names the first optimiser buffer holding a NaN or Inf.
    fn state_bytes(&self, tag: &str) -> Result<Vec<u8>, String> {
        let b = &self.net.backend;
        let params = self.net.params();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.iteration.to_le_bytes());
        out.push(match self.optimizer {
            Optimizer::Sgd => 0,
            Optimizer::Adam => 1,
        });
        out.extend_from_slice(&(tag.len() as u64).to_le_bytes());
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(&(params.len() as u32).to_le_bytes());
        for (i, p) in params.iter().enumerate() {
            out.extend_from_slice(&(p.len as u64).to_le_bytes());
            let mut put = |buf: &B::Buf, what: &str| {
                let values = b.download(buf);
                let bad = values.iter().filter(|v| !v.is_finite()).count();
                if bad > 0 {
                    return Err(format!("{bad} non-finite value(s) (NaN or Inf) in the {what} of trainable tensor {i}"));
                }
                out.extend_from_slice(bytemuck::cast_slice(&values));
                Ok(())
            };
            put(&p.grad, "optimiser buffer")?;
            if let (Optimizer::Adam, Some((m, v))) = (self.optimizer, &p.adam) {
                put(m, "Adam first moment")?;
                put(v, "Adam second moment")?;
            }
        }
        if let Some(ls) = &self.loss_scale {
            out.extend_from_slice(LOSS_SCALE_TAG);
            out.extend_from_slice(&ls.scale.to_le_bytes());
            out.extend_from_slice(&ls.clean.to_le_bytes());
            out.extend_from_slice(&ls.skipped.to_le_bytes());
        }
        Ok(out)
    }

    /// Load a checkpoint written by [`Trainer::save_checkpoint`]: parameters, running
    /// statistics, optimiser buffers and the iteration. The file must cover every layer.
    pub fn resume(&mut self, weights: &Path) -> Result<CheckpointInfo, CheckpointError> {
        let state = state_path(weights);
        if !state.exists() {
            return Err(CheckpointError::MissingState {
                file: weights.display().to_string(),
                state: state.display().to_string(),
            });
        }
        let bytes = std::fs::read(&state).map_err(io_err(&state))?;
        let (info, buffers, loss_scale) = parse_state(&state, &bytes, &self.net, self.optimizer)?;
        let file = weights::read_weights(weights, &self.net.conv_dims(), Extent::All)?;
        let expected_seen = info.iteration * self.step_images() as u64;
        if file.header.seen != expected_seen {
            return Err(CheckpointError::Format {
                file: weights.display().to_string(),
                msg: format!(
                    "seen = {} images, but its .state says iteration {} × batch {} = {expected_seen}",
                    file.header.seen,
                    info.iteration,
                    self.step_images()
                ),
            });
        }
        self.net.set_conv_params(&file.layers);
        let b = &self.net.backend;
        for (p, bufs) in self.net.params().into_iter().zip(buffers) {
            b.upload(&p.grad, &bufs[0]);
            if let (Some((m, v)), [_, bm, bv]) = (&p.adam, bufs.as_slice()) {
                b.upload(m, bm);
                b.upload(v, bv);
            }
        }
        self.iteration = info.iteration;
        if let (Some(ls), Some((scale, clean, skipped))) = (&mut self.loss_scale, loss_scale) {
            (ls.scale, ls.clean, ls.skipped) = (scale, clean, skipped);
        }
        Ok(info)
    }
}

/// Read and check a `.state` file against the network it is loaded into.
fn parse_state<B: Backend>(
    path: &Path,
    bytes: &[u8],
    net: &Network<B>,
    optimizer: Optimizer,
) -> Result<(CheckpointInfo, Vec<Vec<Vec<f32>>>, Option<(f32, u32, u64)>), CheckpointError> {
    let file = path.display().to_string();
    let bad = |msg: String| CheckpointError::Format { file: file.clone(), msg };
    let mut r = Reader { bytes, pos: 0 };
    let truncated = |what: &str| bad(format!("truncated: ends inside {what}"));
    if r.take(8).ok_or_else(|| truncated("the magic"))? != MAGIC {
        return Err(bad("not a checkpoint .state file (bad magic)".into()));
    }
    let version = r.u32().ok_or_else(|| truncated("the version"))?;
    if version != VERSION {
        return Err(bad(format!("version {version}, this build reads version {VERSION}")));
    }
    let iteration = r.u64().ok_or_else(|| truncated("the iteration"))?;
    let found = match r.take(1).ok_or_else(|| truncated("the optimiser"))?[0] {
        0 => Optimizer::Sgd,
        1 => Optimizer::Adam,
        k => return Err(bad(format!("unknown optimiser code {k}"))),
    };
    if found != optimizer {
        return Err(CheckpointError::Optimizer { file, found, expected: optimizer });
    }
    let tag_len = r.u64().ok_or_else(|| truncated("the tag"))? as usize;
    let tag = String::from_utf8_lossy(r.take(tag_len).ok_or_else(|| truncated("the tag"))?).into_owned();
    let params = net.params();
    let count = r.u32().ok_or_else(|| truncated("the tensor count"))? as usize;
    if count != params.len() {
        return Err(bad(format!("{count} trainable tensors, the cfg has {}", params.len())));
    }
    let slots = if optimizer == Optimizer::Adam { 3 } else { 1 };
    let mut buffers = Vec::with_capacity(count);
    for (i, p) in params.iter().enumerate() {
        let len = r.u64().ok_or_else(|| truncated("a tensor length"))? as usize;
        if len != p.len {
            return Err(bad(format!("tensor {i} has {len} values, the cfg's has {}", p.len)));
        }
        let mut bufs = Vec::with_capacity(slots);
        for _ in 0..slots {
            let raw = r.take(4 * len).ok_or_else(|| truncated("the optimiser buffers"))?;
            bufs.push(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
        }
        buffers.push(bufs);
    }
    let loss_scale = if bytes.len() - r.pos == 20 && r.bytes[r.pos..].starts_with(LOSS_SCALE_TAG) {
        r.take(4);
        let scale = r.u32().map(f32::from_bits).filter(|s| s.is_finite() && *s >= 1.0);
        let clean = r.u32();
        let skipped = r.u64();
        match (scale, clean, skipped) {
            (Some(s), Some(c), Some(k)) => Some((s, c, k)),
            _ => return Err(bad("the loss-scale trailer holds a scale below 1 or not finite".into())),
        }
    } else {
        None
    };
    if r.pos != bytes.len() {
        return Err(bad(format!("{} bytes left after the last tensor", bytes.len() - r.pos)));
    }
    Ok((CheckpointInfo { iteration, optimizer, tag }, buffers, loss_scale))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
    }
}

/// The checkpoint with the highest iteration among `<prefix>_<N>.weights` files in `dir` that
/// have a `.state` file beside them.
pub fn latest(dir: &Path, prefix: &str) -> Result<Option<(u64, PathBuf)>, CheckpointError> {
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    let mut best: Option<(u64, PathBuf)> = None;
    for e in entries {
        let path = e.map_err(io_err(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(num) = name.strip_prefix(prefix).and_then(|s| s.strip_prefix('_')).and_then(|s| s.strip_suffix(".weights")) else {
            continue;
        };
        let Ok(it) = num.parse::<u64>() else { continue };
        if state_path(&path).exists() && best.as_ref().is_none_or(|(b, _)| it > *b) {
            best = Some((it, path));
        }
    }
    Ok(best)
}
