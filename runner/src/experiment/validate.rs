//! Checks that need more than one value, or the file system: each failure names its key.

use super::locate::Locator;
use super::{
    BUILTIN_MODELS, BackendSpec, DarknetData, DataSource, Experiment, ExperimentError, ModelSource,
    PolicyName,
};
use std::path::{Path, PathBuf};

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

pub fn validate(exp: &mut Experiment, loc: &Locator) -> Result<(), ExperimentError> {
    let base = exp.base_dir();
    let name = exp.experiment.name.trim();
    if name.is_empty() {
        return Err(loc.at("experiment.name", "must not be empty"));
    }
    if name.contains(['/', '\\']) {
        return Err(loc.at("experiment.name", "is used as a folder name: no `/` or `\\`"));
    }

    validate_model(exp, &base, loc)?;
    validate_data(exp, &base, loc)?;
    validate_train(exp, loc)?;
    validate_backends(exp, loc)?;

    exp.report.out_dir = resolve(&base, &exp.report.out_dir);
    Ok(())
}

fn validate_model(exp: &mut Experiment, base: &Path, loc: &Locator) -> Result<(), ExperimentError> {
    let m = &mut exp.model;
    m.source = if BUILTIN_MODELS.contains(&m.cfg.as_str()) {
        ModelSource::Builtin(m.cfg.clone())
    } else {
        let p = resolve(base, Path::new(&m.cfg));
        if !p.is_file() {
            return Err(loc.at(
                "model.cfg",
                format!(
                    "cfg file not found: {} (nor a built-in model: {})",
                    p.display(),
                    BUILTIN_MODELS.join(", ")
                ),
            ));
        }
        ModelSource::File(p)
    };
    for (key, v) in [("model.width", m.width), ("model.height", m.height)] {
        if let Some(v) = v {
            // Five stride-2 stages: other sizes break route concatenations of YOLO models.
            if v == 0 || v % 32 != 0 {
                return Err(loc.at(key, format!("must be a positive multiple of 32, got {v}")));
            }
        }
    }
    if m.classes == Some(0) {
        return Err(loc.at("model.classes", "must be at least 1"));
    }
    if let Some(w) = &m.weights {
        let p = resolve(base, w);
        if !p.is_file() {
            return Err(loc.at("model.weights", format!("weights file not found: {}", p.display())));
        }
        m.weights = Some(p);
    }
    Ok(())
}

fn validate_data(exp: &mut Experiment, base: &Path, loc: &Locator) -> Result<(), ExperimentError> {
    let model_classes = exp.model.classes;
    match &mut exp.data.source {
        DataSource::Synthetic(s) => {
            let k = "data.synthetic";
            if s.images == 0 {
                return Err(loc.at(&format!("{k}.images"), "must be at least 1"));
            }
            let kinds = engine::data::ShapeKind::ALL.len();
            if s.classes == 0 || s.classes > kinds {
                return Err(loc.at(
                    &format!("{k}.classes"),
                    format!("must be 1..={kinds} (one per shape the synthetic generator draws), got {}", s.classes),
                ));
            }
            if s.max_objects == 0 {
                return Err(loc.at(&format!("{k}.max_objects"), "must be at least 1"));
            }
            if s.min_size == 0 || s.min_size > s.max_size {
                return Err(loc.at(
                    &format!("{k}.min_size"),
                    format!("must be in 1..=max_size ({}), got {}", s.max_size, s.min_size),
                ));
            }
            let side = exp.model.width.unwrap_or(usize::MAX).min(exp.model.height.unwrap_or(usize::MAX));
            if s.max_size > side {
                return Err(loc.at(
                    &format!("{k}.max_size"),
                    format!("{} px does not fit the {side} px model input", s.max_size),
                ));
            }
            if s.seed.is_none() {
                s.seed = Some(exp.experiment.seed);
            }
            if let Some(mc) = model_classes
                && mc != s.classes
            {
                return Err(loc.at(
                    "model.classes",
                    format!("is {mc} but the synthetic data has {} classes", s.classes),
                ));
            }
        }
        DataSource::Darknet(d) => {
            let p = resolve(base, &d.data_file);
            if !p.is_file() {
                return Err(loc.at("data.darknet", format!(".data file not found: {}", p.display())));
            }
            *d = read_darknet_data(&p).map_err(|m| loc.at("data.darknet", m))?;
            if let Some(mc) = model_classes
                && mc != d.names.len()
            {
                return Err(loc.at(
                    "model.classes",
                    format!("is {mc} but {} has {} names", d.names_file.display(), d.names.len()),
                ));
            }
        }
    }
    Ok(())
}

/// A path from a .data file: relative to the .data file's folder, else (Darknet's own rule)
/// to the current directory.
fn data_path(data_dir: &Path, value: &str) -> Result<PathBuf, String> {
    let first = resolve(data_dir, Path::new(value));
    if first.exists() {
        return Ok(first);
    }
    let cwd = PathBuf::from(value);
    if cwd.exists() {
        return Ok(cwd);
    }
    Err(format!("not found: {} (nor {} from the current directory)", first.display(), value))
}

/// Reads a Darknet `.data` file (`key = value` lines) and its `.names`.
pub fn read_darknet_data(path: &Path) -> Result<DarknetData, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = super::base_dir(path);
    let mut classes: Option<(usize, usize)> = None;
    let (mut train, mut valid, mut names) = (None, None, None);
    let mut labels = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let (k, v) = line.split_once('=').ok_or_else(|| format!("{at}: expected `key = value`"))?;
        let (k, v) = (k.trim(), v.trim());
        let file = |what: &str| data_path(&dir, v).map_err(|m| format!("{at}: {what} {m}"));
        match k {
            "classes" => {
                let n = v.parse().map_err(|_| format!("{at}: classes = `{v}` is not a number"))?;
                classes = Some((n, i + 1));
            }
            "train" => train = Some(file("train list")?),
            "valid" => valid = Some(file("valid list")?),
            // A classifier's class names (Darknet's `labels`) win over `names`.
            "names" if !labels => names = Some(file("names file")?),
            "labels" => {
                names = Some(file("labels file")?);
                labels = true;
            }
            _ => {} // backup, eval, results...: not used for training here
        }
    }
    let missing = |k: &str| format!("{}: no `{k} = ...` line", path.display());
    let (classes, classes_line) = classes.ok_or_else(|| missing("classes"))?;
    let names_file = names.ok_or_else(|| missing("names` or `labels"))?;
    let train_list = train.ok_or_else(|| missing("train"))?;
    let names_text = std::fs::read_to_string(&names_file)
        .map_err(|e| format!("{}: {e}", names_file.display()))?;
    let names: Vec<String> =
        names_text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != classes {
        return Err(format!(
            "{}:{classes_line}: classes = {classes} but {} has {} names",
            path.display(),
            names_file.display(),
            names.len()
        ));
    }
    Ok(DarknetData { data_file: path.to_path_buf(), classes, train_list, valid_list: valid, names_file, names })
}

/// Upper bounds that keep iteration arithmetic (epochs × images) far from overflow: a million
/// epochs, and Darknet's own limit on `max_batches` (a C int).
pub const MAX_EPOCHS: u64 = 1_000_000;
pub const MAX_ITERATIONS: u64 = i32::MAX as u64;

fn validate_train(exp: &Experiment, loc: &Locator) -> Result<(), ExperimentError> {
    let t = &exp.train;
    if t.batch == Some(0) {
        return Err(loc.at("train.batch", "must be at least 1"));
    }
    if t.subdivisions == Some(0) {
        return Err(loc.at("train.subdivisions", "must be at least 1"));
    }
    if let (Some(b), Some(s)) = (t.batch, t.subdivisions)
        && b % s != 0
    {
        return Err(loc.at("train.batch", format!("batch {b} is not divisible by subdivisions {s}")));
    }
    match (t.epochs, t.max_batches) {
        (Some(_), Some(_)) => {
            return Err(loc.at("train.max_batches", "set either `epochs` or `max_batches`, not both"));
        }
        (Some(e), _) if !(1..=MAX_EPOCHS).contains(&e) => {
            return Err(loc.at("train.epochs", format!("must be 1..={MAX_EPOCHS}, got {e}")));
        }
        (_, Some(n)) if !(1..=MAX_ITERATIONS).contains(&n) => {
            return Err(loc.at("train.max_batches", format!("must be 1..={MAX_ITERATIONS}, got {n}")));
        }
        _ => {}
    }
    for (key, v) in [("train.burn_in", t.burn_in), ("train.checkpoint_every", t.checkpoint_every), ("train.step", t.step), ("train.sgdr_cycle", t.sgdr_cycle)] {
        if let Some(v) = v
            && v > MAX_ITERATIONS
        {
            return Err(loc.at(key, format!("must be at most {MAX_ITERATIONS} iterations, got {v}")));
        }
    }
    if let Some(steps) = &t.steps
        && let Some(&big) = steps.iter().find(|&&s| s > MAX_ITERATIONS)
    {
        return Err(loc.at("train.steps", format!("must be at most {MAX_ITERATIONS} iterations, got {big}")));
    }
    if let Some(c) = &t.checkpointing {
        c.resolve().map_err(|e| loc.at("train.checkpointing", e))?;
    }
    if let Some(b) = &t.memory_budget {
        b.bytes().map_err(|e| loc.at("train.memory_budget", e))?;
    }
    if t.checkpoint_every == Some(0) {
        return Err(loc.at("train.checkpoint_every", "must be at least 1 (leave it out for no checkpoints)"));
    }
    // Parameters that only mean something for some policies: a mismatch is a misunderstanding.
    if let Some(p) = t.policy {
        use PolicyName::*;
        let set: [(&str, bool, &[PolicyName]); 7] = [
            ("steps", t.steps.is_some(), &[Steps]),
            ("scales", t.scales.is_some(), &[Steps]),
            ("step", t.step.is_some(), &[Step, Sig]),
            ("scale", t.scale.is_some(), &[Step]),
            ("gamma", t.gamma.is_some(), &[Exp, Sig]),
            ("sgdr_cycle", t.sgdr_cycle.is_some(), &[Sgdr]),
            ("sgdr_mult", t.sgdr_mult.is_some(), &[Sgdr]),
        ];
        for (key, present, policies) in set {
            if present && !policies.contains(&p) {
                return Err(loc.at(
                    &format!("train.{key}"),
                    format!("does not apply to policy `{}`", format!("{p:?}").to_lowercase()),
                ));
            }
        }
    }
    if let (Some(steps), Some(scales)) = (&t.steps, &t.scales)
        && steps.len() != scales.len()
    {
        return Err(loc.at(
            "train.scales",
            format!("has {} values but `steps` has {}", scales.len(), steps.len()),
        ));
    }
    if let Some(steps) = &t.steps
        && steps.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(loc.at("train.steps", "must be strictly increasing"));
    }
    if t.optimizer == Some(super::Optimizer::Sgd) {
        for (key, present) in [("b1", t.b1.is_some()), ("b2", t.b2.is_some()), ("eps", t.eps.is_some())] {
            if present {
                return Err(loc.at(&format!("train.{key}"), "only applies to optimizer \"adam\""));
            }
        }
    }
    Ok(())
}

fn validate_backends(exp: &Experiment, loc: &Locator) -> Result<(), ExperimentError> {
    let list = &exp.backends.list;
    if list.is_empty() {
        return Err(loc.at("backends.list", "needs at least one backend"));
    }
    for (i, b) in list.iter().enumerate() {
        if list[..i].contains(b) {
            return Err(loc.at("backends.list", format!("lists `{b}` twice")));
        }
    }
    let th = &exp.thresholds;
    let parity = [
        ("loss_rel_delta_iter", th.loss_rel_delta_iter.is_some()),
        ("loss_rel_delta_window", th.loss_rel_delta_window.is_some()),
        ("map_abs_delta", th.map_abs_delta.is_some()),
        ("top1_abs_delta", th.top1_abs_delta.is_some()),
    ];
    for (key, set) in parity {
        if set && list.len() < 2 {
            return Err(loc.at(&format!("thresholds.{key}"), "compares backends: list at least two in [backends]"));
        }
    }
    let has_cpu = list.contains(&BackendSpec::Cpu);
    let has_gpu = list.iter().any(|b| matches!(b, BackendSpec::Gpu(_)));
    if th.min_gpu_speedup.is_some() && !(has_cpu && has_gpu) {
        return Err(loc.at("thresholds.min_gpu_speedup", "needs both a cpu and a gpu backend"));
    }
    Ok(())
}
