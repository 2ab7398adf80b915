//! Darknet `.cfg` files: parsing, shape inference, summary, overrides.
//!
//! `load("yolov4-tiny")` or `parse_file(path)` give a [`ModelCfg`] (Darknet defaults applied,
//! layer references absolute, shapes already checked) plus warnings for the caller to show.

pub mod model;

pub mod builtin;
pub mod error;
mod graph;
mod layers;
mod net;
mod overrides;
pub mod parse;
mod reader;
pub mod summary;
mod yolo;

pub use builtin::{BUILTIN_NAMES, builtin};
pub use error::{CfgError, CfgWarning, clip};
pub use model::*;
pub use parse::{load, parse_file, parse_str};
pub use summary::layer_bflops;
