//! Helpers shared by the Darknet fixture tests (`darknet_fixture*.rs`).
#![allow(dead_code)] // not every test crate that includes `common` uses them

use std::path::Path;
use std::sync::Arc;

use engine::data::darknet::{DataFile, LabelPolicy};
use engine::data::image::Augment;
use engine::data::loader::{Batch, BatchPlan, LoaderConfig, Stop};

/// The fixture's one batch, through the normal dataset path: its `obj.data` train list in order,
/// labels in file order, no augmentation.
pub fn fixture_batch(dir: &Path, width: usize, height: usize, batch: usize) -> Batch {
    let data = DataFile::load(&dir.join("obj.data")).expect("obj.data loads");
    let set = data.train_set(LabelPolicy::Strict).expect("train list loads");
    let mut cfg = LoaderConfig::training(batch, width, height, 0, Augment::NONE, Stop::Batches(3));
    cfg.shuffle = false;
    cfg.shuffle_boxes = false;
    cfg.workers = 0;
    let plan = BatchPlan::new(Arc::new(set), cfg).expect("plan");
    plan.make_batch(0, &mut None).expect("batch 0")
}

/// A fixture's `expected.json`.
pub fn read_expected(dir: &Path) -> serde_json::Value {
    let path = dir.join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().expect("a number")
}

/// |a − b| / |b| (b is Darknet's value).
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}
