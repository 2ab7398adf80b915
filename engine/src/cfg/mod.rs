//! Darknet `.cfg` files: parsing, shape inference, summary, overrides.

pub mod model;

pub use model::*;
