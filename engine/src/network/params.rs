//! Moving parameters between a [`Network`] and host memory: Darknet `.weights` files and
//! copies from one backend to another (one initial weight set for every backend of a run).

use std::path::Path;

use super::layer::LayerOp;
use super::Network;
use crate::backend::Backend;
use crate::weights::{self, ConvDims, ConvParams, Extent, WeightsError, WeightsFile};

impl<B: Backend> Network<B> {
    /// Per-layer parameter dims of this network (one entry per layer).
    pub fn conv_dims(&self) -> Vec<Option<ConvDims>> {
        let input_c: Vec<usize> = self.shapes.iter().map(|s| s.input.c).collect();
        weights::conv_dims(&self.cfg.layers, &input_c)
    }

    /// Download every conv layer's parameters (file order), one entry per layer.
    pub fn conv_params(&self) -> Vec<Option<ConvParams>> {
        let b = &self.backend;
        self.layers
            .iter()
            .map(|l| match &l.op {
                LayerOp::Conv(c) => Some(ConvParams {
                    biases: b.download(&c.biases.value),
                    scales: c.bn.as_ref().map(|bn| b.download(&bn.scales.value)),
                    rolling_mean: c.bn.as_ref().map(|bn| b.download(&bn.rolling_mean)),
                    rolling_variance: c.bn.as_ref().map(|bn| b.download(&bn.rolling_variance)),
                    weights: b.download(&c.weights.value),
                }),
                _ => None,
            })
            .collect()
    }

    /// Upload parameters (entries that are `None` leave a layer as it is, so a partial file
    /// such as yolov4-tiny.conv.29 keeps the initialisation of the layers it does not cover).
    pub fn set_conv_params(&self, params: &[Option<ConvParams>]) {
        let b = &self.backend;
        for (l, p) in self.layers.iter().zip(params) {
            if let (LayerOp::Conv(c), Some(p)) = (&l.op, p) {
                b.upload(&c.biases.value, &p.biases);
                b.upload(&c.weights.value, &p.weights);
                if let Some(bn) = &c.bn {
                    if let (Some(s), Some(m), Some(v)) = (&p.scales, &p.rolling_mean, &p.rolling_variance) {
                        b.upload(&bn.scales.value, s);
                        b.upload(&bn.rolling_mean, m);
                        b.upload(&bn.rolling_variance, v);
                    }
                }
            }
        }
    }

    /// Load a Darknet `.weights` file (whole, or any prefix such as `*.conv.29`).
    pub fn load_weights(&self, path: &Path) -> Result<WeightsFile, WeightsError> {
        let file = weights::read_weights(path, &self.conv_dims(), Extent::Prefix)?;
        self.set_conv_params(&file.layers);
        Ok(file)
    }

    /// Save every layer as a Darknet `.weights` file (0.2.5, 64-bit `seen`).
    pub fn save_weights(&self, path: &Path, seen: u64) -> Result<(), WeightsError> {
        weights::write_weights(path, seen, &self.conv_dims(), &self.conv_params(), None)
    }

    /// Copy every parameter and running statistic from another network of the same cfg
    /// (possibly on another backend).
    pub fn copy_params_from<C: Backend>(&self, other: &Network<C>) {
        self.set_conv_params(&other.conv_params());
    }
}
