//! Checkpoints: training N iterations straight equals training k, saving, building a fresh
//! network, resuming and training N − k more (same batches from the loader's `start_batch`),
//! bit for bit on the CPU and on the GPU; bad or mismatched checkpoints give one-line errors.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use engine::checkpoint::{self, CheckpointError};
use engine::cpu::CpuBackend;
use engine::data::darknet::{DataFile, LabelPolicy};
use engine::data::image::Augment;
use engine::data::loader::{Loader, LoaderConfig, Stop};
use engine::data::synth::SynthSpec;
use engine::network::{BuildOptions, Network};
use engine::train::{Optimizer, Trainer};
use engine::Backend;

const SIZE: usize = 64;
const BATCH: usize = 2;

struct Fixture {
    dir: PathBuf,
    data: DataFile,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("engine-checkpoint-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = SynthSpec { classes: 2, train_images: 8, val_images: 2, width: SIZE, height: SIZE, seed: 3, ..Default::default() };
        let data = spec.write(&dir.join("data")).expect("synthetic set");
        Fixture { dir, data }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn trainer<B: Backend>(backend: B, optimizer: Optimizer, seed: u64) -> Trainer<B> {
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").expect("built-in cfg");
    cfg.set_classes(2).unwrap();
    cfg.set_size(SIZE, SIZE).unwrap();
    cfg.set_batch(BATCH, 1).unwrap();
    cfg.net.learning_rate = 1e-3;
    cfg.net.burn_in = 0;
    let opts = BuildOptions { seed, adam: optimizer == Optimizer::Adam, ..Default::default() };
    Trainer::new(Network::build(backend, cfg, &opts).unwrap(), optimizer)
}

/// Train batches `start..end` of the seeded loader; returns the losses.
fn train<B: Backend>(t: &mut Trainer<B>, f: &Fixture, start: u64, end: u64) -> Vec<f64> {
    let set = f.data.train_set(LabelPolicy::Strict).unwrap();
    let mut lc = LoaderConfig::training(BATCH, SIZE, SIZE, 11, Augment { flip: true, jitter: 0.2, ..Augment::NONE }, Stop::Batches(end));
    lc.start_batch = start;
    let mut loader = Loader::new(Arc::new(set), lc).unwrap();
    let mut losses = Vec::new();
    while let Some(b) = loader.next_batch() {
        let b = b.unwrap();
        losses.push(t.step(&b.images, &b.truths).unwrap().loss);
    }
    losses
}

fn params<B: Backend>(t: &Trainer<B>) -> Vec<Vec<f32>> {
    t.net.params().iter().flat_map(|p| {
        let mut v = vec![t.net.backend.download(&p.value), t.net.backend.download(&p.grad)];
        if let Some((m, s)) = &p.adam {
            v.push(t.net.backend.download(m));
            v.push(t.net.backend.download(s));
        }
        v
    }).collect()
}

/// 4 iterations straight against 2 + checkpoint + resume into a network built from another seed + 2.
fn resume_equals_straight<B: Backend>(make: impl Fn() -> B, optimizer: Optimizer, tag: &str) {
    let f = Fixture::new(tag);
    let mut straight = trainer(make(), optimizer, 1);
    let all = train(&mut straight, &f, 0, 4);

    let mut first = trainer(make(), optimizer, 1);
    let head = train(&mut first, &f, 0, 2);
    let path = f.dir.join("tiny_2.weights");
    first.save_checkpoint(&path, "experiment-hash").unwrap();
    assert!(checkpoint::state_path(&path).exists());

    let mut resumed = trainer(make(), optimizer, 99);
    let info = resumed.resume(&path).unwrap();
    assert_eq!((info.iteration, info.tag.as_str()), (2, "experiment-hash"));
    assert_eq!(resumed.iteration, 2);
    let tail = train(&mut resumed, &f, 2, 4);

    assert_eq!([head, tail].concat(), all, "{tag}: losses of the resumed run differ");
    assert!(params(&resumed) == params(&straight), "{tag}: parameters or optimiser state differ after resuming");
}

#[test]
fn cpu_sgd_resume_equals_straight_run() {
    resume_equals_straight(CpuBackend::new, Optimizer::Sgd, "cpu-sgd");
}

#[test]
fn cpu_adam_resume_equals_straight_run() {
    resume_equals_straight(CpuBackend::new, Optimizer::Adam, "cpu-adam");
}

#[test]
fn gpu_sgd_resume_equals_straight_run() {
    if common::gpu_or_skip().is_none() {
        return;
    }
    resume_equals_straight(|| common::gpu_or_skip().expect("adapter seen above"), Optimizer::Sgd, "gpu-sgd");
}

#[test]
fn bad_checkpoints_are_one_line_errors_naming_the_file() {
    let f = Fixture::new("errors");
    let mut t = trainer(CpuBackend::new(), Optimizer::Sgd, 1);
    train(&mut t, &f, 0, 1);
    let path = f.dir.join("tiny_1.weights");
    t.save_checkpoint(&path, "").unwrap();
    let line = |e: CheckpointError| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "multi-line error: {s}");
        s
    };

    // A plain Darknet .weights (no .state) cannot resume.
    let plain = f.dir.join("plain.weights");
    std::fs::copy(&path, &plain).unwrap();
    let e = line(trainer(CpuBackend::new(), Optimizer::Sgd, 1).resume(&plain).unwrap_err());
    assert!(e.contains("plain.weights") && e.contains("no `.state`"), "{e}");

    // Another optimiser.
    let e = line(trainer(CpuBackend::new(), Optimizer::Adam, 1).resume(&path).unwrap_err());
    assert!(e.contains("tiny_1.state") && e.contains("Sgd") && e.contains("Adam"), "{e}");

    // Truncated state.
    let state = checkpoint::state_path(&path);
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() - 3]).unwrap();
    let e = line(trainer(CpuBackend::new(), Optimizer::Sgd, 1).resume(&path).unwrap_err());
    assert!(e.contains("tiny_1.state") && e.contains("truncated"), "{e}");

    // Another cfg (3 classes: other head sizes).
    std::fs::write(&state, &bytes).unwrap();
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").unwrap();
    cfg.set_classes(3).unwrap();
    cfg.set_size(SIZE, SIZE).unwrap();
    cfg.set_batch(BATCH, 1).unwrap();
    let mut other = Trainer::new(Network::build(CpuBackend::new(), cfg, &BuildOptions::default()).unwrap(), Optimizer::Sgd);
    let e = line(other.resume(&path).unwrap_err());
    assert!(e.contains("tiny_1.state") && e.contains("values"), "{e}");
}

#[test]
fn latest_picks_the_highest_iteration_with_a_state_file() {
    let f = Fixture::new("latest");
    let mut t = trainer(CpuBackend::new(), Optimizer::Sgd, 1);
    let dir = f.dir.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(checkpoint::latest(&dir, "tiny").unwrap(), None);
    for it in [1u64, 2, 10] {
        train(&mut t, &f, it - 1, it);
        t.iteration = it;
        t.save_checkpoint(&dir.join(format!("tiny_{it}.weights")), "").unwrap();
    }
    // A .weights without its .state (e.g. copied from Darknet) is not a checkpoint.
    std::fs::copy(dir.join("tiny_10.weights"), dir.join("tiny_20.weights")).unwrap();
    std::fs::write(dir.join("tiny_x.weights"), b"junk").unwrap();
    let (it, path) = checkpoint::latest(&dir, "tiny").unwrap().unwrap();
    assert_eq!((it, path.file_name().unwrap().to_str().unwrap()), (10, "tiny_10.weights"));
    assert_eq!(checkpoint::latest(&dir, "other").unwrap(), None);
}
