//! Data pipeline: Darknet dataset files, labels, image decode/resize/augmentation, batch order,
//! the threaded loader and the synthetic dataset.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::data::image::{AugmentDraw, Crop, augment_image};
use engine::data::{
    Augment, BatchPlan, DataError, DataFile, Dataset, Label, LabelPolicy, Loader, LoaderConfig, RgbImage, Stop,
    SynthSpec, label_path_candidates,
};

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-data-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A w×h test image with a deterministic, non-uniform pattern.
fn pattern(w: usize, h: usize, salt: u8) -> RgbImage {
    let mut img = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let p = (y * w + x) * 3;
            img.data[p] = (x * 255 / w.max(2)) as u8;
            img.data[p + 1] = (y * 255 / h.max(2)) as u8;
            img.data[p + 2] = ((x * 7 + y * 13) as u8).wrapping_add(salt);
        }
    }
    img
}

/// Writes `n` images (images/img_k.png, label images/img_k.txt with one box) and train.txt.
fn small_dataset(dir: &Path, n: usize, w: usize, h: usize) -> Dataset {
    fs::create_dir_all(dir.join("images")).unwrap();
    let mut list = String::new();
    for k in 0..n {
        pattern(w, h, k as u8).save_png(&dir.join(format!("images/img_{k}.png"))).unwrap();
        fs::write(dir.join(format!("images/img_{k}.txt")), format!("{} 0.4 0.5 0.3 0.2\n", k % 2)).unwrap();
        list += &format!("images/img_{k}.png\n");
    }
    fs::write(dir.join("train.txt"), list).unwrap();
    Dataset::from_list(&dir.join("train.txt"), Some(dir), 2, LabelPolicy::Strict).unwrap()
}

fn fixture_dir() -> PathBuf {
    let mut candidates = vec![];
    if let Ok(d) = std::env::var("DARKNET_FIXTURES") {
        candidates.push(PathBuf::from(d));
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/fixtures"));
    candidates.push(PathBuf::from("/work/shared/reference/fixtures"));
    candidates
        .into_iter()
        .map(|d| d.join("darknet-yolov4-tiny-96"))
        .find(|d| d.is_dir())
        .expect("Darknet fixture darknet-yolov4-tiny-96 not found (set DARKNET_FIXTURES)")
}

#[test]
fn data_file_relative_paths_resolve_against_its_directory() {
    let dir = scratch("datafile");
    small_dataset(&dir, 2, 16, 16);
    fs::write(dir.join("obj.names"), "cat\ndog\n").unwrap();
    fs::write(
        dir.join("obj.data"),
        "# comment\nclasses = 2\ntrain  = train.txt\nvalid=train.txt\nnames = obj.names\neval = coco\n",
    )
    .unwrap();
    let df = DataFile::load(&dir.join("obj.data")).unwrap();
    assert_eq!(df.classes, 2);
    assert_eq!(df.train, dir.join("train.txt"));
    assert_eq!(df.names, Some(dir.join("obj.names")));
    assert_eq!(df.class_names().unwrap(), vec!["cat", "dog"]);
    let ds = df.train_set(LabelPolicy::Strict).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.samples[1].image, dir.join("images/img_1.png"));
    assert_eq!(ds.samples[1].labels, vec![Label { class: 1, x: 0.4, y: 0.5, w: 0.3, h: 0.2 }]);
    assert_eq!(ds.class_counts(), vec![1, 1]);

    // The fixture's obj.data also uses relative paths.
    let fx = DataFile::load(&fixture_dir().join("obj.data")).unwrap();
    let set = fx.train_set(LabelPolicy::Strict).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.samples[0].labels.len(), 3);

    // Errors name the file and line.
    fs::write(dir.join("bad.data"), "classes = 2\ntrain train.txt\n").unwrap();
    let e = DataFile::load(&dir.join("bad.data")).unwrap_err().to_string();
    assert!(e.contains("bad.data:2"), "{e}");
    fs::write(dir.join("nonames.data"), "classes = 3\ntrain = train.txt\nnames = obj.names\n").unwrap();
    let e = DataFile::load(&dir.join("nonames.data")).unwrap().class_names().unwrap_err().to_string();
    assert!(e.contains("2 names") && e.contains("classes = 3"), "{e}");
    fs::write(dir.join("missing.txt"), "images/img_0.png\nimages/nope.png\n").unwrap();
    let e = Dataset::from_list(&dir.join("missing.txt"), Some(&dir), 2, LabelPolicy::Strict).unwrap_err().to_string();
    assert!(e.contains("missing.txt:2") && e.contains("nope.png"), "{e}");
}

#[test]
fn label_files_are_found_like_darknet() {
    let dir = scratch("labelpath");
    fs::create_dir_all(dir.join("images/train")).unwrap();
    fs::create_dir_all(dir.join("labels/train")).unwrap();
    fs::create_dir_all(dir.join("VOC/JPEGImages")).unwrap();
    fs::create_dir_all(dir.join("VOC/labels")).unwrap();
    for p in ["images/train/a.png", "images/train/b.png", "VOC/JPEGImages/c.png", "images/train/d.png"] {
        pattern(8, 8, 0).save_png(&dir.join(p)).unwrap();
    }
    fs::write(dir.join("labels/train/a.txt"), "0 0.5 0.5 0.5 0.5\n").unwrap();
    // b has labels in both places: the sibling .txt wins.
    fs::write(dir.join("images/train/b.txt"), "1 0.5 0.5 0.5 0.5\n").unwrap();
    fs::write(dir.join("labels/train/b.txt"), "0 0.5 0.5 0.5 0.5\n").unwrap();
    fs::write(dir.join("VOC/labels/c.txt"), "1 0.5 0.5 0.5 0.5\n").unwrap();
    let cands = label_path_candidates(&dir.join("images/train/a.png"));
    assert_eq!(cands, vec![dir.join("images/train/a.txt"), dir.join("labels/train/a.txt")]);
    fs::write(
        dir.join("list.txt"),
        "images/train/a.png\n\nimages/train/b.png\r\nVOC/JPEGImages/c.png\nimages/train/d.png\n",
    )
    .unwrap();
    let ds = Dataset::from_list(&dir.join("list.txt"), None, 2, LabelPolicy::Strict).unwrap();
    let got: Vec<(Option<PathBuf>, Vec<u32>)> =
        ds.samples.iter().map(|s| (s.label_file.clone(), s.labels.iter().map(|l| l.class).collect())).collect();
    assert_eq!(
        got,
        vec![
            (Some(dir.join("labels/train/a.txt")), vec![0]),
            (Some(dir.join("images/train/b.txt")), vec![1]),
            (Some(dir.join("VOC/labels/c.txt")), vec![1]),
            (None, vec![]), // background image
        ]
    );
}

#[test]
fn bad_label_lines_are_errors_naming_file_and_line() {
    let dir = scratch("badlabels");
    pattern(8, 8, 0).save_png(&dir.join("a.png")).unwrap();
    fs::write(dir.join("list.txt"), "a.png\n").unwrap();
    let cases = [
        ("3 0.5 0.5 0.1 0.1", "out of range"),
        ("-1 0.5 0.5 0.1 0.1", "out of range"),
        ("0 0.5 zero 0.1 0.1", "not a number"),
        ("0 0.5 0.5 0.1", "5 fields"),
        ("0 0.5 0.5 0.1 0.1 7", "5 fields"),
        ("0 1.2 0.5 0.1 0.1", "outside [0,1]"),
        ("0 0.5 0.5 -0.1 0.1", "outside [0,1]"),
    ];
    for (line, why) in cases {
        fs::write(dir.join("a.txt"), format!("0 0.5 0.5 0.2 0.2\n\n{line}\n")).unwrap();
        let e = Dataset::from_list(&dir.join("list.txt"), None, 3, LabelPolicy::Strict).unwrap_err();
        assert!(matches!(e, DataError::Parse { line: 3, .. }), "{line}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains("a.txt:3") && msg.contains(why), "{line}: {msg}");

        // Skip-with-warning keeps the good line and reports the bad one.
        let ds = Dataset::from_list(&dir.join("list.txt"), None, 3, LabelPolicy::SkipWithWarning).unwrap();
        assert_eq!(ds.samples[0].labels.len(), 1, "{line}");
        assert_eq!(ds.warnings.len(), 1);
        assert!(ds.warnings[0].contains("a.txt:3") && ds.warnings[0].contains(why), "{}", ds.warnings[0]);
    }
}

#[test]
fn background_image_gives_empty_truths() {
    let dir = scratch("background");
    small_dataset(&dir, 2, 12, 12);
    fs::remove_file(dir.join("images/img_1.txt")).unwrap();
    let ds = Arc::new(Dataset::from_list(&dir.join("train.txt"), None, 2, LabelPolicy::Strict).unwrap());
    assert!(ds.samples[1].label_file.is_none() && ds.samples[1].labels.is_empty());
    let mut cfg = LoaderConfig::validation(2, 12, 12);
    cfg.max_boxes = 4;
    cfg.workers = 0;
    let b = Loader::new(ds, cfg).unwrap().next().unwrap().unwrap();
    assert_eq!(b.boxes(0).count(), 1);
    assert_eq!(b.boxes(1).count(), 0);
    assert!(b.truths[20..].iter().all(|&v| v == 0.0));
    // Identity pipeline: the stored box comes back unchanged (up to float rounding).
    let t = &b.truths[0..5];
    for (a, e) in t.iter().zip([0.4, 0.5, 0.3, 0.2, 0.0]) {
        assert!((a - e).abs() < 1e-6, "{t:?}");
    }
}

#[test]
fn fixture_input_is_pixels_over_255_bit_exact() {
    let fx = fixture_dir();
    let bytes = fs::read(fx.join("darknet_input_X.f32")).unwrap();
    let expected: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(expected.len(), 2 * 3 * 96 * 96);

    // Through the whole loader, as the Darknet fixture case is configured (list order, no aug).
    let df = DataFile::load(&fx.join("obj.data")).unwrap();
    let ds = Arc::new(df.train_set(LabelPolicy::Strict).unwrap());
    let mut cfg = LoaderConfig::training(2, 96, 96, 12345, Augment::NONE, Stop::Batches(1));
    cfg.shuffle = false;
    cfg.shuffle_boxes = false;
    let batch = Loader::new(ds, cfg).unwrap().next().unwrap().unwrap();
    let first = &expected[..3 * 96 * 96];
    let same = batch.images[..3 * 96 * 96].iter().zip(first).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "first image differs from Darknet's input");
    assert!(batch.images.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()));
    // Labels in file order, exactly as written (identity mapping keeps them).
    let boxes: Vec<Vec<f32>> = batch.boxes(0).map(|b| b.to_vec()).collect();
    assert_eq!(boxes.len(), 3);
    assert_eq!(boxes[1], vec![0.828125, 0.234375, 0.21875, 0.21875, 1.0]);
}

#[test]
fn letterbox_keeps_aspect_and_moves_boxes() {
    // 200×100 image into a 96×96 network: the crop grows to 200×200 centred vertically.
    let d = AugmentDraw::IDENTITY;
    let crop = Crop::new(&d, 200, 100, 96, 96, true);
    assert_eq!((crop.left, crop.top, crop.width, crop.height), (0, -50, 200, 200));
    let full = Label { class: 0, x: 0.5, y: 0.5, w: 1.0, h: 1.0 };
    assert_eq!(crop.map_box(&full), [0.5, 0.5, 1.0, 0.5]);
    let top_left = Label { class: 0, x: 0.25, y: 0.25, w: 0.5, h: 0.5 };
    assert_eq!(crop.map_box(&top_left), [0.25, 0.375, 0.5, 0.25]);
    // The added bands get the mean colour; the image sits in the middle.
    let img = pattern(200, 100, 3);
    let out = augment_image(&img, &crop, &d, 96, 96);
    let mean = img.mean_colour();
    assert_eq!(&out.data[0..3], &mean);
    assert_eq!(&out.data[(95 * 96 + 95) * 3..], &mean);
    assert_ne!(&out.data[(48 * 96 + 10) * 3..(48 * 96 + 10) * 3 + 3], &mean);
    // Without letterbox the same image is just stretched.
    let stretch = Crop::new(&d, 200, 100, 96, 96, false);
    assert_eq!(stretch.map_box(&top_left), [0.25, 0.25, 0.5, 0.5]);
}

fn darknet_aug() -> Augment {
    Augment { jitter: 0.3, resize: 1.5, hue: 0.1, saturation: 1.5, exposure: 1.5, flip: true, ..Augment::NONE }
}

#[test]
fn augmentation_is_reproducible_and_boxes_stay_inside() {
    let dir = scratch("augment");
    let ds = Arc::new(small_dataset(&dir, 5, 40, 30));
    let mut cfg = LoaderConfig::training(5, 32, 32, 99, darknet_aug(), Stop::Batches(4));
    cfg.workers = 0;
    let a: Vec<_> = Loader::new(Arc::clone(&ds), cfg.clone()).unwrap().map(|b| b.unwrap()).collect();
    let b: Vec<_> = Loader::new(Arc::clone(&ds), cfg.clone()).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(a, b);
    cfg.seed = 100;
    let c: Vec<_> = Loader::new(ds, cfg).unwrap().map(|b| b.unwrap()).collect();
    assert_ne!(a[0].images, c[0].images);
    let mut widths = vec![];
    for batch in &a {
        assert!(batch.images.iter().all(|v| (0.0..=1.0).contains(v)));
        for i in 0..batch.n {
            for t in batch.boxes(i) {
                let (x, y, w, h) = (t[0], t[1], t[2], t[3]);
                assert!(x - w / 2.0 >= -1e-6 && x + w / 2.0 <= 1.0 + 1e-6, "{t:?}");
                assert!(y - h / 2.0 >= -1e-6 && y + h / 2.0 <= 1.0 + 1e-6, "{t:?}");
                assert!(w >= 1.0 / 32.0 && h >= 1.0 / 32.0, "{t:?}");
                widths.push(w);
            }
        }
    }
    // Jitter/resize really changes the boxes (the stored width is 0.3).
    assert!(widths.iter().any(|w| (w - 0.3).abs() > 0.02), "{widths:?}");
}

#[test]
fn flip_mirrors_image_and_boxes() {
    let img = pattern(24, 16, 5);
    let label = Label { class: 1, x: 0.3, y: 0.4, w: 0.2, h: 0.3 };
    let plain = AugmentDraw::IDENTITY;
    let flipped = AugmentDraw { flip: true, ..plain };
    let c0 = Crop::new(&plain, 24, 16, 24, 16, false);
    let c1 = Crop::new(&flipped, 24, 16, 24, 16, false);
    let a = augment_image(&img, &c0, &plain, 24, 16);
    let b = augment_image(&img, &c1, &flipped, 24, 16);
    for y in 0..16 {
        for x in 0..24 {
            let p = (y * 24 + x) * 3;
            let q = (y * 24 + 23 - x) * 3;
            assert_eq!(a.data[p..p + 3], b.data[q..q + 3]);
        }
    }
    let [x0, y0, w0, h0] = c0.map_box(&label);
    let [x1, y1, w1, h1] = c1.map_box(&label);
    assert!((x1 - (1.0 - x0)).abs() < 1e-6 && y0 == y1 && (w0 - w1).abs() < 1e-6 && h0 == h1);

    // Random draws with flip on: about half of them flip.
    let aug = Augment { flip: true, ..Augment::NONE };
    let mut rng = engine::rng::stream(3, engine::rng::Purpose::Augment);
    let flips = (0..200).filter(|_| aug.draw(24, 16, &mut rng).flip).count();
    assert!((60..140).contains(&flips), "{flips}");
}

#[test]
fn identity_settings_give_the_plain_resize() {
    let img = pattern(50, 37, 9);
    let mut rng = engine::rng::stream(11, engine::rng::Purpose::Augment);
    let d = Augment::NONE.draw(50, 37, &mut rng);
    assert_eq!(d, AugmentDraw::IDENTITY);
    let crop = Crop::new(&d, 50, 37, 32, 24, false);
    assert_eq!(augment_image(&img, &crop, &d, 32, 24), img.resize_bilinear(32, 24));
    // Same size: the image is untouched.
    assert_eq!(img.resize_bilinear(50, 37), img);
    // A uniform image stays uniform under any resize.
    let flat = RgbImage { width: 7, height: 5, data: [10u8, 200, 77].repeat(35) };
    assert!(flat.resize_bilinear(16, 3).data.chunks(3).all(|p| p == [10, 200, 77]));
}

#[test]
fn epochs_visit_every_image_once() {
    let dir = scratch("epochs");
    let ds = Arc::new(small_dataset(&dir, 7, 8, 8));
    let mut cfg = LoaderConfig::training(3, 8, 8, 5, Augment::NONE, Stop::Epochs(3));
    cfg.workers = 0;
    let plan = BatchPlan::new(Arc::clone(&ds), cfg.clone()).unwrap();
    assert_eq!(plan.num_batches(), 7); // ceil(21 / 3)
    let mut seen: Vec<PathBuf> = vec![];
    let mut cache = None;
    for k in 0..plan.num_batches() {
        let b = plan.make_batch(k, &mut cache).unwrap();
        assert_eq!(b.n, 3);
        assert_eq!(b.epoch, k * 3 / 7);
        seen.extend(b.paths);
    }
    let mut orders = vec![];
    for e in 0..3 {
        let mut epoch: Vec<PathBuf> = seen[e * 7..(e + 1) * 7].to_vec();
        orders.push(epoch.clone());
        epoch.sort();
        let mut all: Vec<PathBuf> = ds.samples.iter().map(|s| s.image.clone()).collect();
        all.sort();
        assert_eq!(epoch, all, "epoch {e}");
    }
    assert!(orders[0] != orders[1] || orders[1] != orders[2], "epochs should be reshuffled");

    // shuffle = false keeps list order; Batches(n) runs on across epochs.
    cfg.shuffle = false;
    cfg.stop = Stop::Batches(5);
    let batches: Vec<_> = Loader::new(Arc::clone(&ds), cfg.clone()).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 5);
    let names: Vec<PathBuf> = batches.iter().flat_map(|b| b.paths.clone()).collect();
    for (i, p) in names.iter().enumerate() {
        assert_eq!(p, &ds.samples[i % 7].image);
    }
    assert_eq!(batches[4].epoch, 12 / 7);

    // Validation: one epoch, the last batch short.
    let mut v = LoaderConfig::validation(3, 8, 8);
    v.workers = 0;
    let ns: Vec<usize> = Loader::new(ds, v).unwrap().map(|b| b.unwrap().n).collect();
    assert_eq!(ns, vec![3, 3, 1]);
}

#[test]
fn loader_is_independent_of_worker_count() {
    let dir = scratch("workers");
    let ds = Arc::new(small_dataset(&dir, 6, 20, 14));
    let run = |workers: usize| {
        let mut cfg = LoaderConfig::training(4, 16, 16, 42, darknet_aug(), Stop::Batches(5));
        cfg.workers = workers;
        cfg.prefetch = 3;
        let mut loader = Loader::new(Arc::clone(&ds), cfg).unwrap();
        let mut out = vec![];
        while let Some(b) = loader.next_batch() {
            out.push(b.unwrap());
            let _ = loader.last_wait();
        }
        assert!(loader.total_wait() >= loader.last_wait());
        out
    };
    let one = run(1);
    assert_eq!(one.len(), 5);
    assert_eq!(one.iter().map(|b| b.iteration).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(one, run(3));
    assert_eq!(one, run(0));

    // Resuming at batch 3 gives the same batches 3 and 4.
    let mut cfg = LoaderConfig::training(4, 16, 16, 42, darknet_aug(), Stop::Batches(5));
    cfg.start_batch = 3;
    let resumed: Vec<_> = Loader::new(Arc::clone(&ds), cfg).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(resumed, one[3..].to_vec());

    // Dropping a loader with batches in flight shuts the workers down.
    let mut cfg = LoaderConfig::training(2, 16, 16, 1, darknet_aug(), Stop::Batches(1000));
    cfg.workers = 3;
    let mut l = Loader::new(Arc::clone(&ds), cfg).unwrap();
    l.next().unwrap().unwrap();
    drop(l);
}

#[test]
fn loader_errors_reach_the_consumer() {
    let dir = scratch("loadererr");
    small_dataset(&dir, 4, 8, 8);
    fs::write(dir.join("images/img_2.png"), b"not a png").unwrap();
    let ds = Arc::new(Dataset::from_list(&dir.join("train.txt"), None, 2, LabelPolicy::Strict).unwrap());
    for workers in [0, 2] {
        let mut cfg = LoaderConfig::validation(1, 8, 8);
        cfg.workers = workers;
        let items: Vec<_> = Loader::new(Arc::clone(&ds), cfg).unwrap().collect();
        assert_eq!(items.len(), 3, "stops after the error");
        assert!(items[0].is_ok() && items[1].is_ok());
        let e = items[2].as_ref().unwrap_err().to_string();
        assert!(e.contains("img_2.png"), "{e}");
    }
}

#[test]
fn synthetic_dataset_is_reproducible_and_reads_back() {
    let spec = SynthSpec { classes: 6, train_images: 24, val_images: 6, seed: 7, ..SynthSpec::default() };
    let (d1, d2) = (scratch("synth1"), scratch("synth2"));
    let df = spec.write(&d1).unwrap();
    spec.write(&d2).unwrap();
    let mut files: Vec<PathBuf> = walk(&d1);
    files.sort();
    assert_eq!(files.len(), 2 * 30 + 4);
    for f in &files {
        let rel = f.strip_prefix(&d1).unwrap();
        assert_eq!(fs::read(f).unwrap(), fs::read(d2.join(rel)).unwrap(), "{}", rel.display());
    }
    let other = SynthSpec { seed: 8, ..spec.clone() }.render(0, 0);
    assert_ne!(other, spec.render(0, 0));

    // Labels parse back through the Darknet reader and describe the painted pixels.
    assert_eq!(df.class_names().unwrap(), vec!["rectangle", "ellipse", "triangle", "diamond", "cross", "ring"]);
    let train = df.train_set(LabelPolicy::Strict).unwrap();
    let valid = df.valid_set(LabelPolicy::Strict).unwrap();
    assert_eq!((train.len(), valid.len()), (24, 6));
    assert!(train.class_counts().iter().filter(|&&c| c > 0).count() >= 4);
    for (i, s) in train.samples.iter().enumerate() {
        let (img, labels) = spec.render(0, i as u64);
        assert_eq!(RgbImage::load(&s.image).unwrap(), img);
        assert_eq!(s.labels.len(), labels.len());
        for (a, b) in s.labels.iter().zip(&labels) {
            assert_eq!(a.class, b.class);
            for (u, v) in [(a.x, b.x), (a.y, b.y), (a.w, b.w), (a.h, b.h)] {
                assert!((u - v).abs() < 1e-6);
            }
            // Box edges fall on pixel boundaries of the 96×96 image.
            let left = (a.x - a.w / 2.0) * 96.0;
            assert!((left - left.round()).abs() < 1e-3 && a.w * 96.0 >= 1.0 - 1e-3);
        }
    }
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
