//! Darknet-style layer table with BFLOPs.
//!
//! BFLOPs follow Darknet's make_*_layer: a conv costs 2·filters·(size²·c/groups)·out_h·out_w,
//! a maxpool size²·c·out_h·out_w (Darknet adds these into its "Total BFLOPS" line too — without
//! them yolov4-tiny would print 6.908 instead of Darknet's 6.910); other layers count 0.

use std::fmt::Write;

use super::error::CfgError;
use super::model::{Chw, LayerKind, LayerShape, ModelCfg};

/// Billions of floating-point operations of one layer's forward pass for one image.
pub fn layer_bflops(kind: &LayerKind, shape: &LayerShape) -> f64 {
    let (i, o) = (shape.input, shape.output);
    match kind {
        // In floating point: a (huge) kernel size times filters may not fit an integer.
        LayerKind::Convolutional(c) => {
            let weights = c.filters as f64 * (c.size as f64).powi(2) * (i.c / c.groups.max(1)) as f64;
            2.0 * weights * o.h as f64 * o.w as f64 / 1e9
        }
        LayerKind::Maxpool(p) => (p.size as f64).powi(2) * i.c as f64 * o.h as f64 * o.w as f64 / 1e9,
        _ => 0.0,
    }
}

fn whc(s: Chw) -> String {
    format!("{:4} x{:4} x{:4}", s.w, s.h, s.c)
}

fn list(v: &[usize]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")
}

impl ModelCfg {
    /// Total forward BFLOPs for one image (Darknet's "Total BFLOPS").
    pub fn bflops(&self) -> Result<f64, CfgError> {
        let shapes = self.shapes()?;
        Ok(self.layers.iter().zip(&shapes).map(|(l, s)| layer_bflops(&l.kind, s)).sum())
    }

    /// One line per layer like Darknet's start-up table, then `Total BFLOPS x.xxx`.
    pub fn summary(&self) -> Result<String, CfgError> {
        let shapes = self.shapes()?;
        let mut out = String::new();
        let n = &self.net;
        let _ = writeln!(
            out,
            "net {}x{}x{}, batch {}, subdivisions {}  ({})",
            n.width, n.height, n.channels, n.batch, n.subdivisions, self.source
        );
        let _ = writeln!(out, "   layer   filters  size/strd        input                output");
        let mut total = 0.0;
        for (index, (layer, s)) in self.layers.iter().zip(&shapes).enumerate() {
            let bf = layer_bflops(&layer.kind, s);
            total += bf;
            let io = format!("{} -> {}", whc(s.input), whc(s.output));
            let line = match &layer.kind {
                LayerKind::Convolutional(c) => {
                    let f = if c.groups > 1 { format!("{:5}/{:<4}", c.filters, c.groups) } else { format!("{:5}     ", c.filters) };
                    format!("conv  {f}  {:2} x{:2}/{:2}   {io} {bf:5.3} BF", c.size, c.size, c.stride)
                }
                LayerKind::Maxpool(p) => format!("max              {:2} x{:2}/{:2}   {io} {bf:5.3} BF", p.size, p.size, p.stride),
                LayerKind::Avgpool => format!("avg                             {io}"),
                LayerKind::Upsample { stride, .. } => format!("upsample                 {stride:2}x   {io}"),
                LayerKind::Route(r) => {
                    let g = if r.groups > 1 { format!("{}/{}", r.group_id, r.groups) } else { String::new() };
                    format!("route  {:<20} {g:>8}   -> {}", list(&r.layers), whc(s.output))
                }
                LayerKind::Shortcut { from, activation } => {
                    format!("shortcut from {:<10} {:>8}   {io}", list(from), activation.darknet_name())
                }
                LayerKind::Reorg { stride } => format!("reorg                    /{stride:<2}   {io}"),
                LayerKind::ScaleChannels { from } => format!("scale_channels from {from:<10}  -> {}", whc(s.output)),
                LayerKind::Softmax { groups, temperature } => format!("softmax   groups {groups}, temperature {temperature:.2}  {io}"),
                LayerKind::Cost { kind, scale } => format!("cost      {} scale {scale:.2}              {io}", kind.darknet_name()),
                LayerKind::Dropout { probability } => format!("dropout       p = {probability:.3}        {io}"),
                LayerKind::Yolo(y) => format!(
                    "yolo   classes {}, mask {}, iou_loss {}, iou_norm {:.2}, obj_norm {:.2}, cls_norm {:.2}, scale_x_y {:.2}   {}",
                    y.classes,
                    y.mask.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(","),
                    y.iou_loss.darknet_name(),
                    y.iou_normalizer,
                    y.obj_normalizer,
                    y.cls_normalizer,
                    y.scale_x_y,
                    whc(s.output),
                ),
            };
            let _ = writeln!(out, "{index:4} {line}");
        }
        let _ = writeln!(out, "Total BFLOPS {total:5.3}");
        Ok(out)
    }
}
