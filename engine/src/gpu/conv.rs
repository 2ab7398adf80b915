//! The convolution GEMMs' tile choice (conv.wgsl).

use super::pipelines::GemmTile;

/// Every tile variant the backend may build.
pub(crate) fn all_tiles() -> Vec<GemmTile> {
    Vec::new()
}
