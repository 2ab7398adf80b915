//! Shape inference over the whole layer graph (darknet-spec §b output-size formulas).
//! Checks everything that would make the graph impossible, naming the layer's cfg line.

use super::error::CfgError;
use super::model::{Chw, LayerKind, LayerShape, ModelCfg};

/// Largest width, height or channel count of any tensor, and largest floats per image: far
/// beyond any real network, and small enough that no size arithmetic (× batch included) can
/// overflow. The formulas below saturate, so an absurd cfg value lands here as an error.
pub const MAX_DIM: usize = 1 << 24;
pub const MAX_PER_IMAGE: usize = 1 << 40;

/// Why `s` is too large to exist, if it is.
fn too_large(s: Chw) -> Option<String> {
    let len = s.c.checked_mul(s.h).and_then(|v| v.checked_mul(s.w));
    if s.c > MAX_DIM || s.h > MAX_DIM || s.w > MAX_DIM || len.is_none_or(|l| l > MAX_PER_IMAGE) {
        Some(format!("{}x{}x{} is too large (at most {MAX_DIM} per side and 2^40 values per image)", s.w, s.h, s.c))
    } else {
        None
    }
}

impl ModelCfg {
    /// The network's input, per image.
    pub fn input_shape(&self) -> Chw {
        Chw { c: self.net.channels, h: self.net.height, w: self.net.width }
    }

    /// Input and output shape of every layer, per image. For `[route]` the input is reported
    /// equal to the output (a route has no single input); for every other layer the input is
    /// the previous layer's output (the network input for layer 0).
    pub fn shapes(&self) -> Result<Vec<LayerShape>, CfgError> {
        let net = self.input_shape();
        if let Some(why) = too_large(net) {
            return Err(CfgError::Structure { origin: self.net.origin.clone(), message: format!("input {why}") });
        }
        if net.is_empty() {
            return Err(CfgError::Structure { origin: self.net.origin.clone(), message: format!("empty input {}x{}x{}", net.w, net.h, net.c) });
        }
        let mut out: Vec<LayerShape> = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let err = |message: String| CfgError::Graph { origin: layer.origin.clone(), index, section: layer.kind.name(), message };
            let input = out.last().map_or(net, |s| s.output);
            // A referenced layer must exist and come before this one.
            let get = |j: usize| -> Result<Chw, CfgError> {
                if j >= index {
                    return Err(err(format!("refers to layer {j}, which is not before this layer")));
                }
                Ok(out[j].output)
            };
            let output = match &layer.kind {
                LayerKind::Convolutional(c) => {
                    if c.filters == 0 || c.size == 0 || c.stride == 0 || c.groups == 0 {
                        return Err(err("filters, size, stride and groups must be positive".into()));
                    }
                    if input.c % c.groups != 0 || c.filters % c.groups != 0 {
                        return Err(err(format!("groups={} must divide input channels {} and filters {}", c.groups, input.c, c.filters)));
                    }
                    if c.size > MAX_DIM || c.stride > MAX_DIM || c.padding > MAX_DIM {
                        return Err(err(format!("size, stride and padding must be at most {MAX_DIM}")));
                    }
                    let weights = c.filters.checked_mul(input.c / c.groups).and_then(|v| v.checked_mul(c.size * c.size));
                    if weights.is_none_or(|w| w > MAX_PER_IMAGE) {
                        return Err(err(format!("filters={} × size²={} × channels is too many weights", c.filters, c.size * c.size)));
                    }
                    let pad = c.padding.saturating_mul(2);
                    let (ph, pw) = (input.h.saturating_add(pad), input.w.saturating_add(pad));
                    if pw < c.size || ph < c.size {
                        return Err(err(format!("kernel {} is larger than the padded input {}x{}", c.size, input.w, input.h)));
                    }
                    Chw { c: c.filters, h: (ph - c.size) / c.stride + 1, w: (pw - c.size) / c.stride + 1 }
                }
                LayerKind::Maxpool(p) => {
                    if p.size == 0 || p.stride == 0 {
                        return Err(err("size and stride must be positive".into()));
                    }
                    if p.size > MAX_DIM || p.stride > MAX_DIM || p.padding > MAX_DIM {
                        return Err(err(format!("size, stride and padding must be at most {MAX_DIM}")));
                    }
                    let (ph, pw) = (input.h.saturating_add(p.padding), input.w.saturating_add(p.padding));
                    if pw < p.size || ph < p.size {
                        return Err(err(format!("window {} is larger than the padded input {}x{}", p.size, input.w, input.h)));
                    }
                    Chw { c: input.c, h: (ph - p.size) / p.stride + 1, w: (pw - p.size) / p.stride + 1 }
                }
                LayerKind::Avgpool => Chw { c: input.c, h: 1, w: 1 },
                LayerKind::Upsample { stride, .. } => {
                    if *stride == 0 {
                        return Err(err("stride must be positive".into()));
                    }
                    Chw { c: input.c, h: input.h.saturating_mul(*stride), w: input.w.saturating_mul(*stride) }
                }
                LayerKind::Route(r) => {
                    if r.layers.is_empty() {
                        return Err(err("no input layers".into()));
                    }
                    if r.groups == 0 || r.group_id >= r.groups {
                        return Err(err(format!("group_id={} must be below groups={}", r.group_id, r.groups)));
                    }
                    let first = get(r.layers[0])?;
                    let mut c = 0;
                    for &j in &r.layers {
                        let s = get(j)?;
                        if (s.h, s.w) != (first.h, first.w) {
                            return Err(err(format!(
                                "inputs differ in size: layer {} is {}x{}, layer {j} is {}x{}",
                                r.layers[0], first.w, first.h, s.w, s.h
                            )));
                        }
                        if s.c % r.groups != 0 {
                            return Err(err(format!("layer {j} has {} channels, not divisible by groups={}", s.c, r.groups)));
                        }
                        c = usize::saturating_add(c, s.c / r.groups);
                    }
                    Chw { c, h: first.h, w: first.w }
                }
                LayerKind::Shortcut { from, .. } => {
                    if index == 0 {
                        return Err(err("needs a previous layer".into()));
                    }
                    for &j in from {
                        let s = get(j)?;
                        if s != input {
                            return Err(err(format!(
                                "shape mismatch: previous layer is {}x{}x{}, layer {j} is {}x{}x{}",
                                input.w, input.h, input.c, s.w, s.h, s.c
                            )));
                        }
                    }
                    input
                }
                LayerKind::Reorg { stride } => {
                    if *stride == 0 || input.w % stride != 0 || input.h % stride != 0 {
                        return Err(err(format!("input {}x{} is not divisible by stride {stride}", input.w, input.h)));
                    }
                    Chw { c: input.c.saturating_mul(*stride).saturating_mul(*stride), h: input.h / stride, w: input.w / stride }
                }
                LayerKind::ScaleChannels { from } => {
                    // Darknet: the previous layer holds one scale per channel (C×1×1); it multiplies
                    // the feature map of layer `from`, and the output has that map's shape.
                    if index == 0 {
                        return Err(err("needs a previous layer".into()));
                    }
                    let s = get(*from)?;
                    if input.h != 1 || input.w != 1 || input.c != s.c {
                        return Err(err(format!(
                            "previous layer must be {}x1x1 (one scale per channel of layer {from}), found {}x{}x{}",
                            s.c, input.w, input.h, input.c
                        )));
                    }
                    s
                }
                LayerKind::Dropout { .. } => input,
                LayerKind::Softmax { .. } | LayerKind::Cost { .. } => {
                    if index == 0 {
                        return Err(err("needs a previous layer".into()));
                    }
                    if let LayerKind::Softmax { groups, .. } = &layer.kind
                        && !input.len().is_multiple_of(*groups)
                    {
                        return Err(err(format!("{} inputs are not divisible by groups={groups}", input.len())));
                    }
                    if let Some(y) = self.layers.iter().find(|l| matches!(l.kind, LayerKind::Yolo(_))) {
                        return Err(err(format!("a classifier loss cannot share a network with the [yolo] at {}", y.origin)));
                    }
                    // Every classifier loss reads the same class vector: their inputs must agree.
                    if let Some(j) = (0..index).find(|&j| self.layers[j].kind.is_classifier_loss()) {
                        let first = get(j)?.len();
                        if input.len() != first {
                            return Err(err(format!("{} inputs, but the loss at layer {j} has {first}: every classifier loss must see the same classes", input.len())));
                        }
                    }
                    input
                }
                LayerKind::Yolo(y) => {
                    if index == 0 || !matches!(self.layers[index - 1].kind, LayerKind::Convolutional(_)) {
                        return Err(err("must directly follow a [convolutional] layer".into()));
                    }
                    if y.mask.is_empty() {
                        return Err(err("empty mask".into()));
                    }
                    if let Some(&m) = y.mask.iter().find(|&&m| m >= y.anchors.len()) {
                        return Err(err(format!("mask index {m} is out of range of {} anchors", y.anchors.len())));
                    }
                    let want = y.classes.saturating_add(5).saturating_mul(y.mask.len());
                    if input.c != want {
                        return Err(err(format!(
                            "the [convolutional] before it (layer {}, {}) has filters={}, expected (classes+5)*len(mask) = ({}+5)*{} = {want}",
                            index - 1,
                            self.layers[index - 1].origin,
                            input.c,
                            y.classes,
                            y.mask.len()
                        )));
                    }
                    input
                }
            };
            if let Some(why) = too_large(output) {
                return Err(err(format!("output {why}")));
            }
            if output.is_empty() {
                return Err(err(format!("empty output {}x{}x{}", output.w, output.h, output.c)));
            }
            out.push(LayerShape { input: if matches!(layer.kind, LayerKind::Route(_)) { output } else { input }, output });
        }
        Ok(out)
    }

    /// Indices of the `[yolo]` layers.
    pub fn yolo_layers(&self) -> Vec<usize> {
        self.layers.iter().enumerate().filter(|(_, l)| matches!(l.kind, LayerKind::Yolo(_))).map(|(i, _)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::cfg::{LayerKind, parse_str};

    const BASE: &str = "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=6\nsize=3\npad=1\n";

    fn err(extra: &str) -> String {
        parse_str(&format!("{BASE}{extra}"), "g.cfg").unwrap_err().to_string()
    }

    #[test]
    fn impossible_graphs_name_the_layer() {
        // Layer 1 starts on line 9.
        let e = err("[convolutional]\nfilters=4\ngroups=4\n");
        assert!(e.starts_with("g.cfg:9: layer 1 [conv]") && e.contains("groups=4"), "{e}");
        let e = err("[route]\nlayers=-1\ngroups=4\ngroup_id=1\n");
        assert!(e.starts_with("g.cfg:9: layer 1 [route]") && e.contains("not divisible"), "{e}");
        let e = err("[reorg]\nstride=3\n");
        assert!(e.starts_with("g.cfg:9: layer 1 [reorg]"), "{e}");
        let e = err("[route]\nlayers=-5\n");
        assert!(e.starts_with("g.cfg:10: `layers=-5`"), "{e}");
        let e = err("[maxpool]\nsize=20\nstride=1\npadding=0\n");
        assert!(e.starts_with("g.cfg:9: layer 1 [max]"), "{e}");
    }

    #[test]
    fn references_are_rechecked_on_edited_models() {
        let (mut m, _) = parse_str(&format!("{BASE}[route]\nlayers=0\n[convolutional]\n"), "g.cfg").unwrap();
        m.layers[1].kind = LayerKind::Route(crate::cfg::RouteCfg { layers: vec![2], groups: 1, group_id: 0 });
        let e = m.shapes().unwrap_err().to_string();
        assert!(e.starts_with("g.cfg:9: layer 1 [route]") && e.contains("layer 2"), "{e}");
    }
}
