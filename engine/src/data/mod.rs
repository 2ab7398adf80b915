//! Training/validation data: Darknet datasets (`.data`, image lists, `.names`, label `.txt`),
//! image decoding, Darknet's training augmentation, seeded batch order, a prefetching loader, and a
//! synthetic "shapes" dataset generator (darknet-spec §0 and §d).
//!
//! Determinism: every batch is a pure function of (seed, batch index). The order of images comes
//! from a permutation seeded by (seed, epoch) (spec §0: epochs instead of Darknet's sampling with
//! replacement); the augmentation of one image from a ChaCha stream seeded by
//! (seed, epoch, image index). Thread count and scheduling therefore never change the data.
//!
//! Darknet's mosaic and mixup ([`mosaic`]) and blur and gaussian_noise ([`filters`]) are
//! implemented; the extra images of a mosaic or mixup come from streams seeded by the same
//! (seed, epoch, image index), so they keep this determinism.

pub mod darknet;
pub mod filters;
pub mod image;
pub mod loader;
pub mod mosaic;
pub mod synth;

use std::path::PathBuf;

pub use darknet::{DataFile, Dataset, Label, LabelPolicy, Sample, label_path_candidates};
pub use filters::FilterDraw;
pub use image::{Augment, RgbImage};
pub use loader::{Batch, BatchPlan, Loader, LoaderConfig, Stop};
pub use mosaic::{MixDraw, Source};
pub use synth::{ShapeKind, SynthSpec};

/// Errors of the data pipeline; each names the file (and line where there is one).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The OS error is part of the message, not a `source()`: printed with its chain (`{:#}`)
    /// it would otherwise appear twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {}", crate::cfg::error::clip_to(.msg, 4 * crate::cfg::error::CLIP_CHARS))]
    Parse { path: PathBuf, line: usize, msg: String },
    #[error("{path}: cannot decode image: {msg}")]
    Image { path: PathBuf, msg: String },
    #[error("{path}: cannot write image: {msg}")]
    Encode { path: PathBuf, msg: String },
    #[error("invalid data configuration: {0}")]
    Config(String),
    #[error("data loader stopped: {0}")]
    Loader(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), error: source }
    }

    pub(crate) fn parse(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        DataError::Parse { path: path.into(), line, msg: msg.into() }
    }
}

pub type Result<T> = std::result::Result<T, DataError>;

/// 64-bit mixer (splitmix64 finaliser) used to derive independent seeds from tuples such as
/// (seed, epoch, image index) without any shared generator state.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed derived from a tuple; different tuples give unrelated seeds.
pub(crate) fn derive_seed(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5eed_da7a_u64, |acc, &p| mix64(acc ^ mix64(p)))
}
