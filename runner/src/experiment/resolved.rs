//! `resolved.toml`: the experiment as it ran, every value that the file left to a default or to
//! the model cfg filled in (what Ultralytics' `args.yaml` is to a run). It is a valid experiment
//! file: running it trains the same run (paths are absolute).

use engine::cfg::{ModelCfg, Policy};
use engine::data::loader::Stop;
use toml::{Table, Value};

use super::{DataSource, Experiment, ModelSource, overrides};

/// An f32 from the cfg as the number it was written as (0.001, not 0.0010000000474974513).
fn f32v(v: f32) -> Value {
    Value::Float(format!("{v}").parse().unwrap_or(v as f64))
}

fn int(v: impl TryInto<i64>) -> Value {
    Value::Integer(v.try_into().unwrap_or(i64::MAX))
}

fn text(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn table(entries: Vec<(&str, Value)>) -> Table {
    entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The resolved experiment as TOML text.
pub fn render(exp: &Experiment, cfg: &ModelCfg) -> String {
    let n = &cfg.net;
    let mut root = Table::new();
    root.insert(
        "experiment".into(),
        Value::Table(table(vec![
            ("name", text(&exp.experiment.name)),
            ("seed", int(exp.experiment.seed)),
            ("description", text(&exp.experiment.description)),
        ])),
    );
    let cfg_name = match &exp.model.source {
        ModelSource::File(p) => p.display().to_string(),
        _ => exp.model.cfg.clone(),
    };
    let classes = cfg.classifier_classes().or_else(|| {
        cfg.layers.iter().find_map(|l| match &l.kind {
            engine::cfg::LayerKind::Yolo(y) => Some(y.classes),
            _ => None,
        })
    });
    let mut model = table(vec![("cfg", text(cfg_name)), ("width", int(n.width)), ("height", int(n.height))]);
    if let Some(c) = classes {
        model.insert("classes".into(), int(c));
    }
    if let Some(w) = &exp.model.weights {
        model.insert("weights".into(), text(w.display().to_string()));
    }
    root.insert("model".into(), Value::Table(model));

    let aug = overrides::augment(exp, cfg);
    let mut data = table(vec![("letterbox", Value::Boolean(aug.letter_box)), ("shuffle", Value::Boolean(exp.data.shuffle))]);
    match &exp.data.source {
        DataSource::Synthetic(s) => {
            let spec = table(vec![
                ("images", int(s.images)),
                ("val_images", int(s.val_images)),
                ("classes", int(s.classes)),
                ("min_size", int(s.min_size)),
                ("max_size", int(s.max_size)),
                ("max_objects", int(s.max_objects)),
                ("seed", int(s.seed.unwrap_or(exp.experiment.seed))),
            ]);
            data.insert("synthetic".into(), Value::Table(spec));
        }
        DataSource::Darknet(d) => {
            data.insert("darknet".into(), text(d.data_file.display().to_string()));
        }
    }
    root.insert("data".into(), Value::Table(data));

    let optimizer = match overrides::optimizer(exp, cfg) {
        engine::train::Optimizer::Sgd => "sgd",
        engine::train::Optimizer::Adam => "adam",
    };
    let mut train = table(vec![
        ("batch", int(n.batch)),
        ("subdivisions", int(n.subdivisions)),
        ("optimizer", text(optimizer)),
        ("learning_rate", f32v(n.learning_rate)),
        ("momentum", f32v(n.momentum)),
        ("decay", f32v(n.decay)),
        ("burn_in", int(n.burn_in)),
        ("power", f32v(n.power)),
        ("learning_rate_min", f32v(n.learning_rate_min)),
    ]);
    // Adam's moments mean nothing to SGD (and an experiment may not set them for it).
    if optimizer == "adam" {
        for (k, v) in [("b1", n.b1), ("b2", n.b2), ("eps", n.eps)] {
            train.insert(k.into(), f32v(v));
        }
    }
    match overrides::stop(exp, cfg) {
        Stop::Epochs(e) => train.insert("epochs".into(), int(e)),
        Stop::Batches(b) => train.insert("max_batches".into(), int(b)),
    };
    let policy = match &n.policy {
        Policy::Constant => "constant",
        Policy::Step { step, scale } => {
            train.insert("step".into(), int(*step));
            train.insert("scale".into(), f32v(*scale));
            "step"
        }
        Policy::Steps { steps, scales } => {
            train.insert("steps".into(), Value::Array(steps.iter().map(|&s| int(s)).collect()));
            train.insert("scales".into(), Value::Array(scales.iter().map(|&s| f32v(s)).collect()));
            "steps"
        }
        Policy::Exp { gamma } => {
            train.insert("gamma".into(), f32v(*gamma));
            "exp"
        }
        Policy::Poly => "poly",
        Policy::Sig { gamma, step } => {
            train.insert("gamma".into(), f32v(*gamma));
            train.insert("step".into(), int(*step));
            "sig"
        }
        Policy::Random => "random",
        Policy::Sgdr { cycle, mult } => {
            train.insert("sgdr_cycle".into(), int(*cycle));
            train.insert("sgdr_mult".into(), int(*mult));
            "sgdr"
        }
    };
    train.insert("policy".into(), text(policy));
    if let Some(c) = exp.train.checkpoint_every {
        train.insert("checkpoint_every".into(), int(c));
    }
    train.insert("precision".into(), text(&super::overrides::precision(exp).to_string()));
    match exp.train.checkpointing.as_ref().map(|c| c.resolve()) {
        Some(Ok(engine::network::Checkpointing::Layers(l))) => {
            train.insert("checkpointing".into(), Value::Array(l.iter().map(|&i| int(i)).collect()));
        }
        Some(Ok(engine::network::Checkpointing::Auto)) => {
            train.insert("checkpointing".into(), text("auto"));
        }
        _ => {
            train.insert("checkpointing".into(), text("none"));
        }
    }
    if let Some(Ok(b)) = exp.train.memory_budget.as_ref().map(|b| b.bytes()) {
        train.insert("memory_budget".into(), int(b));
    }
    let augment = table(vec![
        ("enabled", Value::Boolean(exp.train.augment.enabled)),
        ("jitter", f32v(aug.jitter)),
        ("resize", f32v(aug.resize)),
        ("hue", f32v(aug.hue)),
        ("saturation", f32v(aug.saturation)),
        ("exposure", f32v(aug.exposure)),
        ("flip", Value::Boolean(aug.flip)),
        ("mosaic", Value::Boolean(aug.mosaic)),
        ("mixup", Value::Boolean(aug.mixup)),
        ("blur", int(aug.blur)),
        ("gaussian_noise", int(aug.gaussian_noise)),
    ]);
    train.insert("augment".into(), Value::Table(augment));
    root.insert("train".into(), Value::Table(train));

    let mode = match exp.backends.mode {
        super::RunMode::Sequential => "sequential",
        super::RunMode::Concurrent => "concurrent",
    };
    root.insert(
        "backends".into(),
        Value::Table(table(vec![
            ("list", Value::Array(exp.backends.list.iter().map(|b| text(b.to_string())).collect())),
            ("mode", text(mode)),
        ])),
    );

    let t = &exp.thresholds;
    let mut thresholds = table(vec![("window", int(t.window)), ("warmup_iterations", int(t.warmup_iterations))]);
    let mut unset = Vec::new();
    // Gates left out are not evaluated: TOML has no null, so they are named in a comment.
    let gates: [(&str, Option<Value>); 12] = [
        ("loss_rel_delta_iter", t.loss_rel_delta_iter.map(Value::Float)),
        ("loss_rel_delta_iter_first", t.loss_rel_delta_iter_first.map(int)),
        ("loss_rel_delta_window", t.loss_rel_delta_window.map(Value::Float)),
        ("map_abs_delta", t.map_abs_delta.map(Value::Float)),
        ("min_gpu_speedup", t.min_gpu_speedup.map(Value::Float)),
        ("min_map50", t.min_map50.map(Value::Float)),
        ("top1_abs_delta", t.top1_abs_delta.map(Value::Float)),
        ("min_top1", t.min_top1.map(Value::Float)),
        ("rss_growth_bytes", t.rss_growth_bytes.map(int)),
        ("memory_growth_rel", t.memory_growth_rel.map(Value::Float)),
        ("max_rss_bytes", t.max_rss_bytes.map(int)),
        ("max_swap_bytes", t.max_swap_bytes.map(int)),
    ];
    for (k, v) in gates {
        match v {
            Some(v) => {
                thresholds.insert(k.into(), v);
            }
            None => unset.push(k),
        }
    }
    root.insert("thresholds".into(), Value::Table(thresholds));
    root.insert(
        "report".into(),
        Value::Table(table(vec![
            ("out_dir", text(exp.report.out_dir.display().to_string())),
            ("formats", Value::Array(exp.report.formats.iter().map(text).collect())),
        ])),
    );
    let body = toml::to_string(&root).unwrap_or_default();
    let mut out = format!(
        "# {}: the experiment as it ran, every default and cfg value filled in (written by runner run).\n",
        exp.file.display()
    );
    if !unset.is_empty() {
        out.push_str(&format!("# Gates not set (not evaluated): {}.\n", unset.join(", ")));
    }
    out.push('\n');
    out + &body
}
