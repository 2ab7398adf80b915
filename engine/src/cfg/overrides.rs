//! Changes a run makes to a parsed cfg (class count of a dataset, input size, batch).
//! Each applies to a copy, re-runs shape inference, and only then replaces `self`, so a failed
//! override leaves the model as it was.

use super::error::CfgError;
use super::model::{LayerKind, ModelCfg};

impl ModelCfg {
    fn override_err(&self, message: String) -> CfgError {
        CfgError::Override { file: self.source.clone(), message }
    }

    /// Validates `candidate` and adopts it.
    fn commit(&mut self, candidate: ModelCfg, what: &str) -> Result<(), CfgError> {
        if let Err(e) = candidate.shapes() {
            return Err(self.override_err(format!("{what} makes the network impossible: {e}")));
        }
        *self = candidate;
        Ok(())
    }

    /// Sets `classes` of every [yolo] and rewrites `filters` of the [convolutional] right before
    /// it to `(n+5)*len(mask)`, as one edits a Darknet cfg for a custom dataset.
    pub fn set_classes(&mut self, n: usize) -> Result<(), CfgError> {
        if n == 0 {
            return Err(self.override_err("classes must be at least 1".into()));
        }
        let mut m = self.clone();
        if m.is_classifier() {
            // A classifier's last [convolutional] before its losses has one filter per class.
            let first_loss = m.layers.iter().position(|l| l.kind.is_classifier_loss()).unwrap_or(m.layers.len());
            match m.layers[..first_loss].iter_mut().rev().find_map(|l| match &mut l.kind {
                LayerKind::Convolutional(c) => Some(c),
                _ => None,
            }) {
                Some(c) => c.filters = n,
                None => return Err(self.override_err("no [convolutional] before the classifier's loss to set classes on".into())),
            }
            return self.commit(m, &format!("classes={n}"));
        }
        let heads = m.yolo_layers();
        if heads.is_empty() {
            return Err(self.override_err("no [yolo] layer to set classes on".into()));
        }
        for i in heads {
            let origin = m.layers[i].origin.clone();
            let LayerKind::Yolo(y) = &mut m.layers[i].kind else { continue };
            if !y.counters_per_class.is_empty() && y.counters_per_class.len() != n {
                return Err(self.override_err(format!(
                    "[yolo] at {origin} has counters_per_class for {} classes, cannot switch to {n}",
                    y.counters_per_class.len()
                )));
            }
            y.classes = n;
            let filters = (n + 5) * y.mask.len();
            match i.checked_sub(1).map(|p| &mut m.layers[p].kind) {
                Some(LayerKind::Convolutional(c)) => c.filters = filters,
                _ => return Err(self.override_err(format!("[yolo] at {origin} does not follow a [convolutional]"))),
            }
        }
        self.commit(m, &format!("classes={n}"))
    }

    /// A classifier's class count: the values its loss layers see per image (None for a
    /// detector, or when shape inference fails).
    pub fn classifier_classes(&self) -> Option<usize> {
        if !self.is_classifier() {
            return None;
        }
        let shapes = self.shapes().ok()?;
        self.layers.iter().zip(&shapes).find(|(l, _)| l.kind.is_classifier_loss()).map(|(_, s)| s.input.len())
    }

    /// Sets the network input size.
    pub fn set_size(&mut self, width: usize, height: usize) -> Result<(), CfgError> {
        if width == 0 || height == 0 {
            return Err(self.override_err(format!("input size {width}x{height} is empty")));
        }
        let mut m = self.clone();
        m.net.width = width;
        m.net.height = height;
        self.commit(m, &format!("size {width}x{height}"))
    }

    /// Sets `batch` (images per iteration) and `subdivisions` (passes it is split into).
    pub fn set_batch(&mut self, batch: usize, subdivisions: usize) -> Result<(), CfgError> {
        if batch == 0 || subdivisions == 0 || batch % subdivisions != 0 || batch > super::net::MAX_BATCH {
            return Err(self.override_err(format!(
                "batch={batch} must be a positive multiple of subdivisions={subdivisions}, at most {}",
                super::net::MAX_BATCH
            )));
        }
        self.net.batch = batch;
        self.net.subdivisions = subdivisions;
        Ok(())
    }
}
