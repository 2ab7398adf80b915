//! `[net]` / `[network]` with Darknet's parse_net_options defaults (darknet-spec §c, §d).

use super::error::{CfgError, CfgWarning};
use super::model::{NetConfig, Policy};
use super::reader::Reader;

/// [net] keys Darknet knows that this engine accepts and ignores (they affect only Darknet's own
/// memory use, display, GPU tricks, or features this engine does not have).
const NET_IGNORED: &[&str] = &[
    "inputs", "max_crop", "min_crop", "aspect", "center", "time_steps", "track", "augment_speed",
    "init_sequential_subdivisions", "sequential_subdivisions", "try_fix_nan", "weights_reject_freq",
    "equidistant_point", "badlabels_rejection_percentage", "num_sigmas_reject_badlabels", "ema_alpha",
    "loss_scale", "dynamic_minibatch", "optimized_memory", "workspace_size_limit_MB", "cutmix",
    "contrastive", "contrastive_jit_flip", "contrastive_color", "unsupervised",
    "label_smooth_eps", "resize_step", "attention", "adversarial_lr", "max_chart_loss", "seq_scales",
    "show_receptive_field", "random", "resize", "step", "scale", "steps", "scales", "gamma",
    "sgdr_cycle", "sgdr_mult",
];

/// Most images per iteration a cfg may ask for (Darknet's own cfgs use 64; this bound keeps
/// batch × tensor sizes far from integer overflow).
pub const MAX_BATCH: usize = 1 << 16;

pub(crate) fn parse_net(mut r: Reader<'_>, warnings: &mut Vec<CfgWarning>) -> Result<NetConfig, CfgError> {
    let origin = r.origin();
    let batch = r.positive("batch", 1)?;
    let subdivisions = r.positive("subdivisions", 1)?;
    if batch > MAX_BATCH {
        return Err(CfgError::Structure { origin: origin.clone(), message: format!("batch={batch} is more than {MAX_BATCH} images") });
    }
    if batch % subdivisions != 0 {
        // Darknet would silently train on batch/subdivisions*subdivisions images per iteration.
        return Err(CfgError::Structure {
            origin: origin.clone(),
            message: format!("batch={batch} is not a multiple of subdivisions={subdivisions}"),
        });
    }
    let width = r.opt_usize("width")?.ok_or_else(|| r.missing("width"))?;
    let height = r.opt_usize("height")?.ok_or_else(|| r.missing("height"))?;
    let channels = r.positive("channels", 3)?;
    if width == 0 || height == 0 {
        return Err(CfgError::Structure { origin: origin.clone(), message: format!("input size {width}x{height} is empty") });
    }
    let max_batches = r.u64("max_batches", 0)?;
    let policy = parse_policy(&mut r, max_batches)?;
    let net = NetConfig {
        batch,
        subdivisions,
        width,
        height,
        channels,
        momentum: r.f32("momentum", 0.9)?,
        decay: r.f32("decay", 0.0001)?,
        learning_rate: r.f32("learning_rate", 0.001)?,
        learning_rate_min: r.f32("learning_rate_min", 0.00001)?,
        burn_in: r.u64("burn_in", 0)?,
        power: r.f32("power", 4.0)?,
        max_batches,
        policy,
        adam: r.flag("adam", false)?,
        b1: r.f32("B1", 0.9)?,
        b2: r.f32("B2", 0.999)?,
        eps: r.f32("eps", 0.000001)?,
        angle: r.f32("angle", 0.0)?,
        saturation: r.f32("saturation", 1.0)?,
        exposure: r.f32("exposure", 1.0)?,
        hue: r.f32("hue", 0.0)?,
        flip: r.flag("flip", true)?,
        mosaic: r.flag("mosaic", false)?,
        mosaic_bound: r.flag("mosaic_bound", false)?,
        letter_box: r.flag("letter_box", false)?,
        mixup: r.flag("mixup", false)?,
        blur: r.u64("blur", 0)?.min(u32::MAX as u64) as u32,
        gaussian_noise: r.u64("gaussian_noise", 0)?.min(u32::MAX as u64) as u32,
        origin,
    };
    r.finish(NET_IGNORED, warnings);
    Ok(net)
}

/// `policy=` and the keys that only that policy reads (Darknet get_policy; step/scale/gamma
/// defaults from parse_net_options). Keys of other policies stay unread → "no effect" warnings.
fn parse_policy(r: &mut Reader<'_>, max_batches: u64) -> Result<Policy, CfgError> {
    let Some((name, line)) = r.string("policy") else { return Ok(Policy::Constant) };
    Ok(match name.as_str() {
        "constant" => Policy::Constant,
        "poly" => Policy::Poly,
        "random" => Policy::Random,
        "step" => Policy::Step { step: r.u64("step", 1)?, scale: r.f32("scale", 1.0)? },
        "exp" => Policy::Exp { gamma: r.f32("gamma", 1.0)? },
        "sigmoid" => Policy::Sig { gamma: r.f32("gamma", 1.0)?, step: r.u64("step", 1)? },
        "sgdr" => {
            let cycle = r.u64("sgdr_cycle", max_batches)?;
            let mult = match r.opt_usize("sgdr_mult")? {
                None => 2,
                Some(m) => u32::try_from(m).map_err(|_| r.bad("sgdr_mult", &m.to_string(), line, "too large"))?,
            };
            Policy::Sgdr { cycle, mult }
        }
        "steps" => {
            let steps = r.list::<u64>("steps", "non-negative integers")?;
            let scales = r.list::<f32>("scales", "numbers")?;
            let ((steps, sl), (scales, _)) = match (steps, scales) {
                (Some(s), Some(c)) => (s, c),
                (None, _) => return Err(r.missing("steps")),
                (_, None) => return Err(r.missing("scales")),
            };
            if steps.len() != scales.len() {
                let text = steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
                return Err(r.bad("steps", &text, sl, format!("{} steps but {} scales", steps.len(), scales.len())));
            }
            Policy::Steps { steps, scales }
        }
        _ => return Err(r.bad("policy", &name, line, "expected constant, step, steps, exp, poly, sigmoid, random or sgdr")),
    })
}
