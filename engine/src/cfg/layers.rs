//! Sections after `[net]`, with Darknet's parse_*_section defaults. Relative layer indices
//! (negative numbers) are resolved here: Darknet adds them to the current layer's index.

use super::error::{CfgError, CfgWarning};
use super::model::{ConvCfg, LayerKind, MaxpoolCfg, RouteCfg};
use super::reader::Reader;
use super::yolo;
use crate::shapes::{Activation, CostKind};

/// Darknet section names this engine cannot run (error rather than a silently different network).
const UNSUPPORTED: &[&str] = &[
    "local", "activation", "crnn", "gru", "lstm", "conv_lstm", "history", "rnn", "connected", "conn",
    "local_avg", "local_avgpool", "reorg3d", "lrn", "normalization", "batchnorm", "soft",
    "contrastive", "region", "detection", "crop", "sam", "Gaussian_yolo", "gaussian_yolo",
    "empty", "silence", "implicit_add", "implicit_mul", "deconvolutional", "deconv",
];

pub(crate) fn parse_layer(mut r: Reader<'_>, index: usize, warnings: &mut Vec<CfgWarning>) -> Result<LayerKind, CfgError> {
    let name = r.sec.name.clone();
    let (kind, ignored): (LayerKind, &[&str]) = match name.as_str() {
        "convolutional" | "conv" => (conv(&mut r)?, CONV_IGNORED),
        "route" => (route(&mut r, index)?, &[]),
        "maxpool" | "max" => (maxpool(&mut r)?, &[]),
        "avgpool" | "avg" => (LayerKind::Avgpool, &[]),
        "upsample" => (upsample(&mut r)?, &[]),
        "shortcut" => (shortcut(&mut r, index)?, &[]),
        "reorg" => (reorg(&mut r)?, &[]),
        "scale_channels" => (scale_channels(&mut r, index)?, &[]),
        "dropout" => (dropout(&mut r)?, &[]),
        "yolo" => (LayerKind::Yolo(yolo::parse_yolo(&mut r)?), yolo::YOLO_IGNORED),
        "softmax" => (softmax(&mut r)?, &[]),
        "cost" => (cost(&mut r)?, COST_IGNORED),
        "net" | "network" => {
            return Err(CfgError::Structure { origin: r.origin(), message: format!("[{name}] may only be the first section") });
        }
        other if UNSUPPORTED.contains(&other) => {
            return Err(CfgError::UnsupportedSection { origin: r.origin(), section: name });
        }
        _ => return Err(CfgError::UnknownSection { origin: r.origin(), section: name }),
    };
    r.common_layer_keys()?;
    r.finish(ignored, warnings);
    Ok(kind)
}

/// Conv keys that change nothing in the computation this engine does.
const CONV_IGNORED: &[&str] = &["cbn", "grad_centr", "flipped", "dot", "angle", "reverse", "stretch", "stretch_sway", "rotate", "sway"];

pub(crate) fn activation(r: &mut Reader<'_>, default: Activation) -> Result<Activation, CfgError> {
    match r.string("activation") {
        None => Ok(default),
        Some((v, line)) => Activation::from_darknet(&v).ok_or_else(|| {
            r.bad("activation", &v, line, "unsupported activation (linear, logistic, relu, leaky, tanh, mish, swish, hard_mish)")
        }),
    }
}

fn conv(r: &mut Reader<'_>) -> Result<LayerKind, CfgError> {
    let filters = r.positive("filters", 1)?;
    let size = r.positive("size", 1)?;
    let stride = r.positive("stride", 1)?;
    // Darknet: stride_x/stride_y override stride when set; only the square case is supported.
    for key in ["stride_x", "stride_y"] {
        if let Some((v, line)) = r.get(key)
            && v.parse::<usize>().ok() != Some(stride)
        {
            return Err(CfgError::UnsupportedKey { origin: r.origin_at(line), key: key.into(), value: v, why: "non-square stride" });
        }
    }
    let pad = r.flag("pad", false)?;
    let padding = r.usize("padding", 0)?;
    let padding = if pad { size / 2 } else { padding };
    let groups = r.positive("groups", 1)?;
    let batch_normalize = r.flag("batch_normalize", false)?;
    let activation = activation(r, Activation::Logistic)?;
    r.reject_int_unless("dilation", 1, "dilated convolution")?;
    r.reject_int_unless("antialiasing", 0, "anti-aliased convolution")?;
    r.reject_int_unless("binary", 0, "binary weights")?;
    r.reject_int_unless("xnor", 0, "XNOR convolution")?;
    r.reject_int_unless("bin_output", 0, "XNOR convolution")?;
    r.reject_int_unless("deform", 0, "deformable convolution")?;
    r.reject_int_unless("coordconv", 0, "coordconv")?;
    r.reject_int_unless("assisted_excitation", 0, "assisted excitation")?;
    if let Some((v, line)) = r.get("share_index") {
        return Err(CfgError::UnsupportedKey { origin: r.origin_at(line), key: "share_index".into(), value: v, why: "weight sharing" });
    }
    Ok(LayerKind::Convolutional(ConvCfg { filters, size, stride, padding, groups, batch_normalize, activation }))
}

/// A Darknet layer reference: negative = relative to `index`, else absolute. Must point backwards.
fn layer_ref(r: &Reader<'_>, key: &str, raw: &str, value: i64, line: usize, index: usize) -> Result<usize, CfgError> {
    let abs = if value < 0 { index as i64 + value } else { value };
    if abs < 0 {
        return Err(r.bad(key, raw, line, format!("layer {value} relative to layer {index} is before the first layer")));
    }
    if abs as usize >= index {
        return Err(r.bad(key, raw, line, format!("refers to layer {abs}, which is not before this layer ({index})")));
    }
    Ok(abs as usize)
}

fn layer_refs(r: &mut Reader<'_>, key: &'static str, index: usize) -> Result<Vec<usize>, CfgError> {
    let (raw, line) = r.get(key).ok_or_else(|| r.missing(key))?;
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let v: i64 = item.parse().map_err(|_| r.bad(key, &raw, line, "expected a comma-separated list of layer indices"))?;
        out.push(layer_ref(r, key, &raw, v, line, index)?);
    }
    if out.is_empty() {
        return Err(r.bad(key, &raw, line, "expected at least one layer index"));
    }
    Ok(out)
}

fn route(r: &mut Reader<'_>, index: usize) -> Result<LayerKind, CfgError> {
    let layers = layer_refs(r, "layers", index)?;
    let groups = r.positive("groups", 1)?;
    let group_id = r.usize("group_id", 0)?;
    if group_id >= groups {
        let line = r.sec.entries.iter().find(|e| e.key == "group_id").map_or(r.sec.line, |e| e.line);
        return Err(r.bad("group_id", &group_id.to_string(), line, format!("must be below groups={groups}")));
    }
    Ok(LayerKind::Route(RouteCfg { layers, groups, group_id }))
}

fn maxpool(r: &mut Reader<'_>) -> Result<LayerKind, CfgError> {
    let stride = r.positive("stride", 1)?;
    let size = r.positive("size", stride)?;
    let padding = r.usize("padding", size - 1)?;
    for key in ["stride_x", "stride_y"] {
        if let Some((v, line)) = r.get(key)
            && v.parse::<usize>().ok() != Some(stride)
        {
            return Err(CfgError::UnsupportedKey { origin: r.origin_at(line), key: key.into(), value: v, why: "non-square stride" });
        }
    }
    r.reject_int_unless("maxpool_depth", 0, "channel max-pooling")?;
    r.reject_int_unless("antialiasing", 0, "anti-aliased pooling")?;
    Ok(LayerKind::Maxpool(MaxpoolCfg { size, stride, padding }))
}

fn upsample(r: &mut Reader<'_>) -> Result<LayerKind, CfgError> {
    // Darknet's default stride is 2; a negative stride means down-sampling (not supported).
    let stride = match r.opt_i64("stride")? {
        None => 2,
        Some(s) if s > 0 => s as usize,
        Some(s) => {
            let line = r.sec.entries.iter().find(|e| e.key == "stride").map_or(r.sec.line, |e| e.line);
            return Err(CfgError::UnsupportedKey { origin: r.origin_at(line), key: "stride".into(), value: s.to_string(), why: "reverse upsample" });
        }
    };
    let scale = r.f32("scale", 1.0)?;
    Ok(LayerKind::Upsample { stride, scale })
}

fn shortcut(r: &mut Reader<'_>, index: usize) -> Result<LayerKind, CfgError> {
    let from = layer_refs(r, "from", index)?;
    let activation = activation(r, Activation::Linear)?;
    if let Some((v, line)) = r.get("weights_type")
        && v != "none"
    {
        return Err(CfgError::UnsupportedKey { origin: r.origin_at(line), key: "weights_type".into(), value: v, why: "weighted shortcut" });
    }
    if let Some((v, line)) = r.get("weights_normalization")
        && v != "none"
    {
        return Err(CfgError::UnsupportedKey { origin: r.origin_at(line), key: "weights_normalization".into(), value: v, why: "weighted shortcut" });
    }
    Ok(LayerKind::Shortcut { from, activation })
}

fn reorg(r: &mut Reader<'_>) -> Result<LayerKind, CfgError> {
    let stride = r.positive("stride", 1)?;
    r.reject_int_unless("reverse", 0, "reverse reorg")?;
    Ok(LayerKind::Reorg { stride })
}

fn scale_channels(r: &mut Reader<'_>, index: usize) -> Result<LayerKind, CfgError> {
    let from = layer_refs(r, "from", index)?;
    if from.len() != 1 {
        let (raw, line) = r.get("from").unwrap_or_default();
        return Err(r.bad("from", &raw, line, "expected exactly one layer index"));
    }
    r.reject_int_unless("scale_wh", 0, "spatial scale_channels")?;
    // Darknet reads `activation` here but only applies linear in practice.
    if let Some((v, line)) = r.get("activation")
        && v != "linear"
    {
        return Err(CfgError::UnsupportedKey { origin: r.origin_at(line), key: "activation".into(), value: v, why: "activation after scale_channels" });
    }
    Ok(LayerKind::ScaleChannels { from: from[0] })
}

fn dropout(r: &mut Reader<'_>) -> Result<LayerKind, CfgError> {
    let probability = r.f32("probability", 0.5)?;
    if !(0.0..1.0).contains(&probability) {
        let line = r.sec.entries.iter().find(|e| e.key == "probability").map_or(r.sec.line, |e| e.line);
        return Err(r.bad("probability", &probability.to_string(), line, "must be in [0, 1)"));
    }
    r.reject_int_unless("dropblock", 0, "DropBlock")?;
    r.reject_f32_unless("dropblock_size_rel", 0.0, "DropBlock")?;
    r.reject_int_unless("dropblock_size_abs", 0, "DropBlock")?;
    Ok(LayerKind::Dropout { probability })
}

/// Darknet's parse_softmax: `groups` (1), `temperature` (1); hierarchical softmax (`tree`) and
/// the per-pixel form (`spatial`) are not supported.
fn softmax(r: &mut Reader<'_>) -> Result<LayerKind, CfgError> {
    let groups = r.positive("groups", 1)?;
    let temperature = r.f32("temperature", 1.0)?;
    if !(temperature.is_finite() && temperature > 0.0) {
        let line = r.sec.entries.iter().find(|e| e.key == "temperature").map_or(r.sec.line, |e| e.line);
        return Err(r.bad("temperature", &temperature.to_string(), line, "must be a positive number"));
    }
    if let Some((v, line)) = r.get("tree") {
        return Err(CfgError::UnsupportedKey { origin: r.origin_at(line), key: "tree".into(), value: v, why: "hierarchical softmax" });
    }
    r.reject_int_unless("spatial", 0, "spatial softmax")?;
    r.reject_int_unless("noloss", 0, "softmax without its loss")?;
    Ok(LayerKind::Softmax { groups, temperature })
}

/// [cost] keys Darknet reads for other cost types (seg, L1, wgan) or never uses in training.
const COST_IGNORED: &[&str] = &["ratio", "noobject_scale", "thresh"];

/// Darknet's parse_cost: `type` (sse), `scale` (1).
fn cost(r: &mut Reader<'_>) -> Result<LayerKind, CfgError> {
    let kind = match r.string("type") {
        None => CostKind::Sse,
        Some((v, line)) => match v.as_str() {
            "sse" => CostKind::Sse,
            "masked" => CostKind::Masked,
            "smooth" => CostKind::Smooth,
            _ => return Err(r.bad("type", &v, line, "unsupported cost type (sse, masked, smooth)")),
        },
    };
    let scale = r.f32("scale", 1.0)?;
    if !scale.is_finite() {
        let line = r.sec.entries.iter().find(|e| e.key == "scale").map_or(r.sec.line, |e| e.line);
        return Err(r.bad("scale", &scale.to_string(), line, "must be a finite number"));
    }
    Ok(LayerKind::Cost { kind, scale })
}
