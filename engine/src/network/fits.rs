//! Whether a network's buffers fit a backend: the one check made before anything is allocated
//! (`Network::build`, and `runner check`/`run` before training), with advice where they do not.
//!
//! A GPU holds buffers up to `max_buffer_size` and binds at most `max_storage_buffer_binding_size`
//! of one at a time. Tensors larger than one binding are bound in ranges of whole images
//! (gpu/chunk.rs), so what cannot run is: a buffer over the buffer limit, one image of a tensor
//! over the binding limit, or a tensor over the binding limit that an op binds whole (a [yolo]
//! head and the other ops `ActivationPlan::binds_whole` names).

use super::build::{BuildOptions, MemoryPlan};
use super::plan::TensorId;
use super::NetworkError;
use crate::cfg::ModelCfg;

/// What a backend can hold and bind, in floats ([`crate::Backend::max_buffer_floats`] and
/// [`crate::Backend::max_binding_floats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferLimits {
    /// The most floats one buffer may hold.
    pub buffer: usize,
    /// The most floats one kernel binding may hold (usable for a range of images).
    pub binding: usize,
}

impl BufferLimits {
    /// No limit (the CPU).
    pub const NONE: BufferLimits = BufferLimits { buffer: usize::MAX, binding: usize::MAX };
}

/// The first limit a plan exceeds.
struct Misfit {
    what: String,
    floats: usize,
    limit: usize,
    /// Over the binding limit (else the buffer limit).
    binding: bool,
    /// Fewer images per pass may help.
    by_batch: bool,
}

fn tensor_name(id: Option<TensorId>) -> String {
    id.map_or_else(|| "a tensor".to_string(), |t| format!("layer {}'s {}", t.layer, t.kind.name()))
}

/// A byte count in MiB, or KiB below one MiB (small limits of tests).
pub(super) fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 { format!("{} MiB", bytes >> 20) } else { format!("{} KiB", bytes.div_ceil(1024)) }
}

impl MemoryPlan {
    fn misfit(&self, limits: BufferLimits) -> Option<Misfit> {
        if self.largest > limits.buffer {
            let what = "this network's largest buffer".to_string();
            return Some(Misfit { what, floats: self.largest, limit: limits.buffer, binding: false, by_batch: true });
        }
        let (image, id) = self.largest_image;
        if image > limits.binding {
            let what = format!("one image of {} (tensors are bound in ranges of whole images)", tensor_name(id));
            return Some(Misfit { what, floats: image, limit: limits.binding, binding: true, by_batch: false });
        }
        let (whole, id) = self.largest_whole;
        if whole > limits.binding {
            let what = format!("{} (an op that binds it whole)", tensor_name(id));
            return Some(Misfit { what, floats: whole, limit: limits.binding, binding: true, by_batch: true });
        }
        None
    }

    /// Refuses this plan (made by [`MemoryPlan::of`] from `cfg` and `opts`) where a backend with
    /// `limits` cannot hold or bind it, naming the tensor, its size and the limit, with advice:
    /// the smallest subdivisions (a divisor of the batch) whose mini-batch fits, or a smaller
    /// input when none does.
    pub fn check_fits(&self, cfg: &ModelCfg, opts: &BuildOptions, limits: BufferLimits, backend: &str) -> Result<(), NetworkError> {
        let Some(m) = self.misfit(limits) else { return Ok(()) };
        let net = &cfg.net;
        let fits = m.by_batch.then(|| {
            (net.subdivisions + 1..=net.batch).filter(|&s| net.batch.is_multiple_of(s)).find(|&s| {
                let mut c = cfg.clone();
                c.net.subdivisions = s;
                MemoryPlan::of(&c, opts).is_ok_and(|p| p.misfit(limits).is_none())
            })
        });
        let advice = match fits.flatten() {
            Some(s) => format!("raise subdivisions to {s} (mini-batch {}) or lower width/height", net.batch / s),
            None if m.by_batch => "lower width/height (even one image per pass does not fit)".to_string(),
            None => "lower width/height (one image alone does not fit)".to_string(),
        };
        Err(NetworkError::TooLarge {
            backend: backend.to_string(),
            what: m.what,
            bytes: 4 * m.floats as u64,
            binding: m.binding,
            limit: (m.limit as u64).saturating_mul(4),
            batch: net.batch,
            subdivisions: net.subdivisions,
            advice,
        })
    }
}
