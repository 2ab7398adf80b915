//! Building a [`Network`]: the memory plan (every buffer allocated once) and Darknet's weight
//! initialisation from a seeded ChaCha stream.

use rand::Rng;

use super::layer::{needs_pre_activation, BatchNorm, Conv, Layer, LayerOp, Param};
use super::{Network, NetworkError};
use crate::backend::Backend;
use crate::cfg::{LayerKind, ModelCfg};
use crate::rng::{stream, Purpose};
use crate::shapes::{ConvShape, PoolShape, ReorgShape, UpsampleShape, YoloParams};
use crate::yolo_stats::STATS_LEN;

/// Options for [`Network::build`].
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Allocate Adam moments for every parameter.
    pub adam: bool,
    /// Truth slots per image (Darknet's `max`, 200 by default).
    pub max_boxes: usize,
    /// Seed of the run (weight init stream and dropout masks).
    pub seed: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { adam: false, max_boxes: 200, seed: 0 }
    }
}

fn param<B: Backend>(b: &B, len: usize, decay: bool, adam: bool) -> Param<B> {
    Param {
        value: b.alloc(len),
        grad: b.alloc(len),
        adam: if adam { Some((b.alloc(len), b.alloc(len))) } else { None },
        decay,
        len,
    }
}

impl<B: Backend> Network<B> {
    /// Instantiate `cfg` on `backend` for mini-batches of `cfg.net.batch / cfg.net.subdivisions`
    /// images and initialise its weights as Darknet does (see [`Network::init_weights`]).
    pub fn build(backend: B, cfg: ModelCfg, opts: &BuildOptions) -> Result<Network<B>, NetworkError> {
        let shapes = cfg.shapes()?;
        let net = &cfg.net;
        if net.subdivisions == 0 || net.batch % net.subdivisions != 0 {
            return Err(NetworkError::Subdivisions { batch: net.batch, subdivisions: net.subdivisions });
        }
        let mb = net.batch / net.subdivisions;
        let b = &backend;
        let mut layers = Vec::with_capacity(cfg.layers.len());
        let mut heads = Vec::new();
        let mut scratch_len = 1;
        for (i, (lc, sh)) in cfg.layers.iter().zip(&shapes).enumerate() {
            let (inp, out) = (sh.input, sh.output);
            let op = match &lc.kind {
                LayerKind::Convolutional(c) => {
                    let shape = ConvShape::new(mb, inp.c, inp.h, inp.w, c.filters, c.size, c.stride, c.padding, c.groups);
                    scratch_len = scratch_len.max(shape.output_len());
                    let bn = if c.batch_normalize {
                        Some(BatchNorm {
                            scales: param(b, c.filters, false, opts.adam),
                            rolling_mean: b.alloc(c.filters),
                            rolling_variance: b.alloc(c.filters),
                            mean: b.alloc(c.filters),
                            variance: b.alloc(c.filters),
                            x_norm: b.alloc(shape.output_len()),
                        })
                    } else {
                        None
                    };
                    LayerOp::Conv(Conv {
                        shape,
                        activation: c.activation,
                        weights: param(b, shape.weight_len(), true, opts.adam),
                        biases: param(b, c.filters, false, opts.adam),
                        bn,
                        pre_act: needs_pre_activation(c.activation).then(|| b.alloc(shape.output_len())),
                    })
                }
                LayerKind::Route(r) => LayerOp::Route { inputs: r.layers.clone(), groups: r.groups, group_id: r.group_id },
                LayerKind::Maxpool(m) => LayerOp::Maxpool(PoolShape::new(mb, inp.c, inp.h, inp.w, m.size, m.stride, m.padding)),
                LayerKind::Avgpool => LayerOp::Avgpool,
                LayerKind::Upsample { stride, scale } => {
                    LayerOp::Upsample(UpsampleShape { batch: mb, c: inp.c, h: inp.h, w: inp.w, stride: *stride, scale: *scale })
                }
                LayerKind::Shortcut { from, activation } => LayerOp::Shortcut {
                    from: from.clone(),
                    activation: *activation,
                    pre_act: needs_pre_activation(*activation).then(|| b.alloc(mb * out.len())),
                },
                LayerKind::Reorg { stride } => {
                    LayerOp::Reorg(ReorgShape { batch: mb, c: inp.c, h: inp.h, w: inp.w, stride: *stride })
                }
                LayerKind::ScaleChannels { from } => LayerOp::ScaleChannels { from: *from },
                LayerKind::Dropout { probability } => LayerOp::Dropout { probability: *probability },
                LayerKind::Yolo(y) => {
                    let params = YoloParams {
                        batch: mb,
                        w: inp.w,
                        h: inp.h,
                        classes: y.classes,
                        anchors: y.anchors.clone(),
                        mask: y.mask.clone(),
                        net_w: net.width,
                        net_h: net.height,
                        max_boxes: opts.max_boxes,
                        scale_x_y: y.scale_x_y,
                        ignore_thresh: y.ignore_thresh,
                        truth_thresh: y.truth_thresh,
                        iou_thresh: y.iou_thresh,
                        iou_thresh_kind: y.iou_thresh_kind,
                        iou_normalizer: y.iou_normalizer,
                        obj_normalizer: y.obj_normalizer,
                        cls_normalizer: y.cls_normalizer,
                        iou_loss: y.iou_loss,
                        label_smooth_eps: y.label_smooth_eps,
                        focal_loss: y.focal_loss,
                        max_delta: y.max_delta,
                        new_coords: y.new_coords,
                        objectness_smooth: y.objectness_smooth,
                    };
                    heads.push(i);
                    LayerOp::Yolo { params, head: heads.len() - 1 }
                }
            };
            layers.push(Layer {
                op,
                input: inp,
                output_shape: out,
                output: b.alloc(mb * out.len()),
                delta: b.alloc(mb * out.len()),
            });
        }
        let input_len = mb * net.channels * net.height * net.width;
        let input = b.alloc(input_len);
        let truths = b.alloc(mb * opts.max_boxes * 5);
        let stats = b.alloc((net.subdivisions * heads.len() * STATS_LEN).max(1));
        let scratch = b.alloc(scratch_len);
        let subdivisions = net.subdivisions;
        let mut network = Network {
            backend,
            cfg,
            shapes,
            mini_batch: mb,
            layers,
            input,
            truths,
            max_boxes: opts.max_boxes,
            stats,
            subdivisions,
            heads,
            scratch,
            seed: opts.seed,
            darknet_cpu: Default::default(),
        };
        network.init_weights(opts.seed);
        Ok(network)
    }

    /// Darknet's initialisation: conv weights `√(2/(size²·c/groups))·U[−1,1)`, biases 0, BN
    /// scales 1, rolling mean and variance 0. Draws come from the seed's weight-init ChaCha
    /// stream in layer order, so one seed gives one weight set on every backend.
    pub fn init_weights(&mut self, seed: u64) {
        let mut rng = stream(seed, Purpose::WeightInit);
        for l in &self.layers {
            if let LayerOp::Conv(c) = &l.op {
                let s = &c.shape;
                let fan_in = (s.size * s.size * s.c / s.groups) as f32;
                let scale = (2.0 / fan_in).sqrt();
                let w: Vec<f32> = (0..s.weight_len()).map(|_| scale * rng.random_range(-1.0f32..1.0)).collect();
                self.backend.upload(&c.weights.value, &w);
                self.backend.fill(&c.biases.value, 0.0);
                if let Some(bn) = &c.bn {
                    self.backend.fill(&bn.scales.value, 1.0);
                    self.backend.fill(&bn.rolling_mean, 0.0);
                    self.backend.fill(&bn.rolling_variance, 0.0);
                }
            }
        }
        for p in self.params() {
            self.backend.fill(&p.grad, 0.0);
            if let Some((m, v)) = &p.adam {
                self.backend.fill(m, 0.0);
                self.backend.fill(v, 0.0);
            }
        }
    }
}
