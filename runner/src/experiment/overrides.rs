//! From an experiment to what the engine runs: the model cfg with the experiment's overrides,
//! the optimiser, the augmentation and when training stops. `run` and `check` both use these,
//! so what `check` validates is what `run` trains.

use anyhow::{Result, bail};
use engine::cfg::ModelCfg;
use engine::data::image::Augment;
use engine::data::loader::Stop;

use super::{Experiment, ModelSource, PolicyName};

/// The experiment's model cfg with its overrides applied (cfg warnings are printed).
pub fn model_cfg(exp: &Experiment) -> Result<ModelCfg> {
    let (mut cfg, warnings) = match &exp.model.source {
        ModelSource::Builtin(name) => engine::cfg::load(name)?,
        ModelSource::File(p) => engine::cfg::parse_file(p)?,
        ModelSource::Unresolved => bail!("{}: [model] cfg was not resolved", exp.file.display()),
    };
    for w in warnings {
        eprintln!("{w}");
    }
    // Before the overrides (which would fail on it less clearly): training needs a loss layer.
    if !cfg.layers.iter().any(|l| matches!(l.kind, engine::cfg::LayerKind::Yolo(_)) || l.kind.is_classifier_loss()) {
        let name = match &exp.model.source {
            ModelSource::File(p) => p.display().to_string(),
            _ => exp.model.cfg.clone(),
        };
        bail!("{name}: the model has no loss layer ([yolo], or [softmax]/[cost] for a classifier); training it would optimise nothing (is the cfg cut short?)");
    }
    if let Some(c) = exp.model.classes {
        cfg.set_classes(c)?;
    }
    if exp.model.width.is_some() || exp.model.height.is_some() {
        cfg.set_size(exp.model.width.unwrap_or(cfg.net.width), exp.model.height.unwrap_or(cfg.net.height))?;
    }
    let t = &exp.train;
    if t.batch.is_some() || t.subdivisions.is_some() {
        cfg.set_batch(t.batch.unwrap_or(cfg.net.batch), t.subdivisions.unwrap_or(cfg.net.subdivisions))?;
    }
    let n = &mut cfg.net;
    if let Some(v) = t.learning_rate { n.learning_rate = v as f32; }
    if let Some(v) = t.momentum { n.momentum = v as f32; }
    if let Some(v) = t.decay { n.decay = v as f32; }
    if let Some(v) = t.burn_in { n.burn_in = v; }
    if let Some(v) = t.power { n.power = v as f32; }
    if let Some(v) = t.max_batches { n.max_batches = v; }
    if let Some(v) = t.learning_rate_min { n.learning_rate_min = v as f32; }
    if let Some(v) = t.b1 { n.b1 = v as f32; }
    if let Some(v) = t.b2 { n.b2 = v as f32; }
    if let Some(v) = t.eps { n.eps = v as f32; }
    if let Some(p) = t.policy {
        use engine::cfg::Policy;
        use PolicyName as P;
        n.policy = match p {
            P::Constant => Policy::Constant,
            P::Step => Policy::Step { step: t.step.unwrap_or(1), scale: t.scale.unwrap_or(1.0) as f32 },
            P::Steps => Policy::Steps {
                steps: t.steps.clone().unwrap_or_default(),
                scales: t.scales.clone().unwrap_or_default().iter().map(|&s| s as f32).collect(),
            },
            P::Exp => Policy::Exp { gamma: t.gamma.unwrap_or(1.0) as f32 },
            P::Poly => Policy::Poly,
            P::Sig => Policy::Sig { gamma: t.gamma.unwrap_or(1.0) as f32, step: t.step.unwrap_or(1) },
            P::Random => Policy::Random,
            P::Sgdr => Policy::Sgdr { cycle: t.sgdr_cycle.unwrap_or(n.max_batches), mult: t.sgdr_mult.unwrap_or(2) },
        };
    }
    Ok(cfg)
}

/// The optimiser: the experiment's choice, else the cfg's `adam=`.
pub fn optimizer(exp: &Experiment, cfg: &ModelCfg) -> engine::train::Optimizer {
    use engine::train::Optimizer as O;
    match exp.train.optimizer {
        Some(super::Optimizer::Adam) => O::Adam,
        Some(super::Optimizer::Sgd) => O::Sgd,
        None if cfg.net.adam => O::Adam,
        None => O::Sgd,
    }
}

/// Gradient checkpointing and the memory budget of `[train]` (validated when the experiment
/// was loaded).
pub fn memory(exp: &Experiment) -> Result<(engine::network::Checkpointing, Option<u64>)> {
    let c = exp.train.checkpointing.as_ref().map(|c| c.resolve()).transpose().map_err(|e| anyhow::anyhow!("train.checkpointing: {e}"))?;
    let b = exp.train.memory_budget.as_ref().map(|b| b.bytes()).transpose().map_err(|e| anyhow::anyhow!("train.memory_budget: {e}"))?;
    Ok((c.unwrap_or_default(), b))
}

/// `[train] precision` (fp32 unless the experiment says mixed).
pub fn precision(exp: &Experiment) -> engine::network::Precision {
    match exp.train.precision {
        Some(crate::experiment::PrecisionSetting::Mixed) => engine::network::Precision::Mixed,
        _ => engine::network::Precision::Fp32,
    }
}

/// When training stops: the experiment's epochs or max_batches, else the cfg's max_batches.
pub fn stop(exp: &Experiment, cfg: &ModelCfg) -> Stop {
    match (exp.train.epochs, exp.train.max_batches) {
        (Some(e), _) => Stop::Epochs(e),
        (None, Some(n)) => Stop::Batches(n),
        (None, None) => Stop::Batches(cfg.net.max_batches.max(1)),
    }
}

/// Augmentation from the cfg (`[net]` + last `[yolo]` jitter/resize) with the experiment's switches.
pub fn augment(exp: &Experiment, cfg: &ModelCfg) -> Augment {
    let a = &exp.train.augment;
    if !a.enabled {
        return Augment { letter_box: exp.data.letterbox.unwrap_or(cfg.net.letter_box), ..Augment::NONE };
    }
    let (jitter, resize) = cfg
        .layers
        .iter()
        .rev()
        .find_map(|l| match &l.kind {
            engine::cfg::LayerKind::Yolo(y) => Some((y.jitter, y.resize)),
            _ => None,
        })
        .unwrap_or((0.0, 1.0));
    let mut aug = Augment::from_cfg(&cfg.net, a.jitter.map(|v| v as f32).unwrap_or(jitter), a.resize.map(|v| v as f32).unwrap_or(resize));
    if let Some(v) = a.hue { aug.hue = v as f32; }
    if let Some(v) = a.saturation { aug.saturation = v as f32; }
    if let Some(v) = a.exposure { aug.exposure = v as f32; }
    if let Some(v) = a.flip { aug.flip = v; }
    if let Some(v) = a.mosaic { aug.mosaic = v; }
    if let Some(v) = a.mixup { aug.mixup = v; }
    if let Some(v) = a.blur { aug.blur = v; }
    if let Some(v) = a.gaussian_noise { aug.gaussian_noise = v; }
    if let Some(v) = exp.data.letterbox { aug.letter_box = v; }
    aug
}
