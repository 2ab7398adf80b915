//! Darknet-style detector training on any backend.
//!
//! See ARCHITECTURE.md at the repository root for the code map and invariants.

pub mod backend;
pub mod bench;
pub mod cfg;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod diverge;
pub mod eval;
pub mod gpu;
pub mod lr;
pub mod network;
pub mod profile;
pub mod rng;
pub mod shapes;
pub mod train;
pub mod weights;
pub mod yolo;
pub mod yolo_stats;

pub use backend::Backend;
