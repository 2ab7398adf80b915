//! Mosaic, mixup, blur and gaussian_noise augmentation (engine::data::mosaic, engine::data::filters).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::data::filters::{gaussian_blur, gaussian_kernel};
use engine::data::image::Crop;
use engine::data::mosaic::{Source, place_tile};
use engine::data::{Augment, Batch, BatchPlan, Dataset, LabelPolicy, Loader, LoaderConfig, RgbImage, Stop};

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-augment-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Writes images and their label lines (`class x y w h`), a train.txt, and loads the dataset.
fn write_dataset(dir: &Path, items: &[(RgbImage, Vec<String>)], classes: usize) -> Arc<Dataset> {
    fs::create_dir_all(dir.join("images")).unwrap();
    let mut list = String::new();
    for (k, (img, labels)) in items.iter().enumerate() {
        img.save_png(&dir.join(format!("images/img_{k}.png"))).unwrap();
        fs::write(dir.join(format!("images/img_{k}.txt")), labels.join("\n") + "\n").unwrap();
        list += &format!("images/img_{k}.png\n");
    }
    fs::write(dir.join("train.txt"), list).unwrap();
    Arc::new(Dataset::from_list(&dir.join("train.txt"), Some(dir), classes, LabelPolicy::Strict).unwrap())
}

fn solid(w: usize, h: usize, rgb: [u8; 3]) -> RgbImage {
    RgbImage { width: w, height: h, data: rgb.repeat(w * h) }
}

/// High-frequency texture, different for each `salt`.
fn texture(w: usize, h: usize, salt: usize) -> RgbImage {
    let mut img = RgbImage::new(w, h);
    for (i, v) in img.data.iter_mut().enumerate() {
        let (p, c) = (i / 3, i % 3);
        let (x, y) = (p % w, p / w);
        *v = (((x * 37 + y * 91 + c * 53 + salt * 17) * 2_654_435_761usize) >> 7) as u8;
    }
    img
}

/// Pixel (x, y) of image `i` of a batch, as 8-bit RGB (rounded back from /255).
fn pixel(b: &Batch, i: usize, x: usize, y: usize) -> [u8; 3] {
    let plane = b.width * b.height;
    let base = i * 3 * plane + y * b.width + x;
    std::array::from_fn(|c| (b.images[base + c * plane] * 255.0).round() as u8)
}

fn planar(img: &RgbImage) -> Vec<f32> {
    let mut v = vec![0f32; 3 * img.width * img.height];
    img.to_planar(&mut v);
    v
}

fn batches(ds: &Arc<Dataset>, cfg: LoaderConfig) -> Vec<Batch> {
    Loader::new(Arc::clone(ds), cfg).unwrap().map(|b| b.unwrap()).collect()
}

const COLOURS: [[u8; 3]; 6] = [[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20], [20, 230, 230], [230, 20, 230]];

#[test]
fn cfg_settings_reach_augment() {
    let text = "[net]\nwidth=32\nheight=32\nmosaic=1\nmosaic_bound=1\nmixup=1\nblur=5\ngaussian_noise=20\n\
                [convolutional]\nfilters=25\n[yolo]\nanchors=10,14\njitter=.2\nresize=1.5\n";
    let (m, w) = engine::cfg::parse_str(text, "aug.cfg").unwrap();
    assert!(w.is_empty(), "{w:?}");
    let a = Augment::from_cfg(&m.net, 0.2, 1.5);
    assert!(a.mosaic && a.mosaic_bound && a.mixup);
    assert_eq!((a.blur, a.gaussian_noise, a.jitter, a.resize), (5, 20, 0.2, 1.5));
    let bad = "[net]\nwidth=32\nheight=32\nblur=-1\n[convolutional]\nfilters=25\n[yolo]\nanchors=10,14\n";
    let e = engine::cfg::parse_str(bad, "bad.cfg").unwrap_err().to_string();
    assert!(e.contains("bad.cfg:4") && e.contains("blur"), "{e}");
}

#[test]
fn mosaic_tiles_carry_their_own_boxes() {
    let dir = scratch("mosaic");
    let sizes = [(40, 30), (50, 50), (64, 48), (30, 60), (45, 45), (80, 40)];
    let items: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(k, &(w, h))| {
            (solid(w, h, COLOURS[k]), vec![format!("{k} 0.3 0.3 0.3 0.3"), format!("{k} 0.7 0.65 0.25 0.4")])
        })
        .collect();
    let ds = write_dataset(&dir, &items, 6);
    // Jitter, random resize and flip on; colour jitter off so every tile keeps its colour.
    let aug = Augment { jitter: 0.3, resize: 1.5, flip: true, mosaic: true, ..Augment::NONE };
    let mut cfg = LoaderConfig::training(8, 64, 64, 21, aug, Stop::Batches(4));
    cfg.workers = 0;
    let (mut combined, mut single, mut most_sources) = (0, 0, 0);
    for b in batches(&ds, cfg) {
        for i in 0..b.n {
            let mut colours: Vec<[u8; 3]> = (0..64 * 64).map(|p| pixel(&b, i, p % 64, p / 64)).collect();
            colours.sort();
            colours.dedup();
            assert!(colours.iter().all(|c| COLOURS.contains(c)), "a pixel of no source colour: {colours:?}");
            assert!(colours.len() <= 4, "more than four sources in one image");
            if colours.len() > 1 { combined += 1 } else { single += 1 }
            let mut classes = vec![];
            for t in b.boxes(i) {
                let [x, y, w, h, class] = [t[0], t[1], t[2], t[3], t[4]];
                assert!(x - w / 2.0 >= -1e-6 && x + w / 2.0 <= 1.0 + 1e-6, "box outside the image: {t:?}");
                assert!(y - h / 2.0 >= -1e-6 && y + h / 2.0 <= 1.0 + 1e-6, "box outside the image: {t:?}");
                assert!(w >= 1.0 / 64.0 && h >= 1.0 / 64.0, "tiny box kept: {t:?}");
                let want = COLOURS[class as usize];
                // Every whole pixel inside the box, and the one under its centre, is its image's.
                let (l, r) = (((x - w / 2.0) * 64.0).ceil() as usize, ((x + w / 2.0) * 64.0).floor() as usize);
                let (tp, bt) = (((y - h / 2.0) * 64.0).ceil() as usize, ((y + h / 2.0) * 64.0).floor() as usize);
                assert_eq!(pixel(&b, i, ((x * 64.0) as usize).min(63), ((y * 64.0) as usize).min(63)), want, "centre of {t:?}");
                for py in tp..bt {
                    for px in l..r {
                        assert_eq!(pixel(&b, i, px, py), want, "pixel ({px},{py}) of box {t:?}");
                    }
                }
                classes.push(class as usize);
            }
            classes.sort();
            classes.dedup();
            most_sources = most_sources.max(classes.len());
        }
    }
    // Darknet combines about half of the images; with 32 images both kinds occur.
    assert!(combined >= 6 && single >= 6, "combined {combined}, single {single}");
    assert!(most_sources >= 3, "no mosaic carried boxes of three or more images");
}

#[test]
fn mosaic_tile_meets_the_cut_past_the_fill_border() {
    // A 20×20 network image made from a 10-px-wide source cropped from x = -5 (5 fill pixels on
    // the left) and x = 15 (5 on the right): fill is grey, the image red.
    let mut img = solid(20, 20, [128, 128, 128]);
    for y in 0..20 {
        for x in 5..15 {
            img.data[(y * 20 + x) * 3..(y * 20 + x) * 3 + 3].copy_from_slice(&[255, 0, 0]);
        }
    }
    let crop = Crop { orig_w: 10, orig_h: 20, left: -5, top: 0, width: 20, height: 20, flip: false };
    let src = Source { image: img, boxes: vec![[0.375, 0.5, 0.25, 0.5, 3.0]], crop };
    // Top-right tile (x from cut 8): the red edge (source x 5) must land on x = 8.
    let mut out = solid(20, 20, [0, 0, 0]);
    let mut truths = vec![];
    place_tile(&mut out, &src, 1, 8, 12, &mut truths);
    let at = |x: usize, y: usize| [out.data[(y * 20 + x) * 3], out.data[(y * 20 + x) * 3 + 1], out.data[(y * 20 + x) * 3 + 2]];
    assert_eq!(at(8, 0), [255, 0, 0]);
    assert_eq!(at(7, 0), [0, 0, 0], "tile wrote left of the cut");
    assert_eq!(at(8, 12), [0, 0, 0], "tile wrote below the cut");
    // Box: source pixels x 5..10, y 5..15; the tile takes source rows 8..20 (bottom edge on the
    // cut), so y 5..15 → −3..7, clipped to 0..7; x 5..10 → 8..13.
    assert_eq!(truths.len(), 1);
    let t = truths[0];
    let want = [10.5 / 20.0, 3.5 / 20.0, 5.0 / 20.0, 7.0 / 20.0, 3.0];
    for (g, w) in t.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{t:?} vs {want:?}");
    }
    // Top-left tile: the right fill border is skipped, so the red right edge (x 15) meets x = 8.
    let mut out2 = solid(20, 20, [0, 0, 0]);
    place_tile(&mut out2, &src, 0, 8, 12, &mut vec![]);
    assert_eq!(out2.data[(0 * 20 + 7) * 3..(0 * 20 + 7) * 3 + 3], [255, 0, 0]);
}

#[test]
fn same_seed_same_batches_for_any_worker_count() {
    let dir = scratch("determinism");
    let items: Vec<_> = (0..7)
        .map(|k| (texture(30 + 4 * k, 40 - 2 * k, k), vec![format!("{} 0.5 0.5 0.4 0.6", k % 3), format!("{} 0.2 0.3 0.2 0.2", (k + 1) % 3)]))
        .collect();
    let ds = write_dataset(&dir, &items, 3);
    let aug = Augment {
        jitter: 0.3,
        resize: 1.5,
        hue: 0.1,
        saturation: 1.5,
        exposure: 1.5,
        flip: true,
        mosaic: true,
        blur: 5,
        gaussian_noise: 8,
        ..Augment::NONE
    };
    let run = |workers: usize, seed: u64, aug: Augment| {
        let mut cfg = LoaderConfig::training(3, 32, 32, seed, aug, Stop::Batches(6));
        cfg.workers = workers;
        batches(&ds, cfg)
    };
    for a in [aug, Augment { mosaic: false, mixup: true, ..aug }] {
        let one = run(1, 9, a);
        assert_eq!(one, run(4, 9, a), "1 vs 4 workers");
        assert_eq!(one, run(0, 9, a), "1 worker vs consumer thread");
        assert_ne!(one, run(1, 10, a), "another seed gave the same batches");
    }
    // A plan's batch is also the same when made alone, out of order.
    let cfg = LoaderConfig::training(3, 32, 32, 9, aug, Stop::Batches(6));
    let plan = BatchPlan::new(Arc::clone(&ds), cfg).unwrap();
    assert_eq!(plan.make_batch(4, &mut None).unwrap(), run(2, 9, aug)[4]);
}

#[test]
fn mixup_blends_two_images_and_keeps_both_label_sets() {
    let dir = scratch("mixup");
    // Images at the network size: without other augmentation each source is exactly pixels/255.
    let items: Vec<_> = (0..5).map(|k| (texture(24, 24, k + 1), vec![format!("{k} 0.5 0.5 0.5 0.5")])).collect();
    let ds = write_dataset(&dir, &items, 5);
    let sources: Vec<Vec<f32>> = items.iter().map(|(img, _)| planar(img)).collect();
    let aug = Augment { mixup: true, ..Augment::NONE };
    let mut cfg = LoaderConfig::training(5, 24, 24, 4, aug, Stop::Batches(4));
    cfg.workers = 2;
    let (mut mixed, mut plain) = (0, 0);
    for b in batches(&ds, cfg) {
        for i in 0..b.n {
            let own: usize = b.paths[i].file_stem().unwrap().to_str().unwrap()[4..].parse().unwrap();
            let boxes: Vec<&[f32]> = b.boxes(i).collect();
            let got = &b.images[i * 3 * 24 * 24..(i + 1) * 3 * 24 * 24];
            for t in &boxes {
                assert_eq!(t[..4], [0.5, 0.5, 0.5, 0.5]);
            }
            assert_eq!(boxes[0][4] as usize, own, "the slot's own labels come first");
            match boxes.len() {
                1 => {
                    plain += 1;
                    assert_eq!(got, &sources[own][..]);
                }
                2 => {
                    mixed += 1;
                    let other = boxes[1][4] as usize;
                    let err = got
                        .iter()
                        .zip(sources[own].iter().zip(&sources[other]))
                        .map(|(g, (a, b))| (g - (0.5 * a + 0.5 * b)).abs())
                        .fold(0f32, f32::max);
                    assert!(err <= 1e-6, "blend of {own} and {other} off by {err}");
                }
                n => panic!("{n} boxes"),
            }
        }
    }
    assert!(mixed >= 4 && plain >= 4, "mixed {mixed}, plain {plain}");
}

#[test]
fn blur_one_keeps_boxes_sharp_and_blurs_the_background() {
    let dir = scratch("blur1");
    // Box x 0.5 ± 0.125 on 32 px: Darknet's rectangle is pixels 12..20 exactly.
    let items: Vec<_> = (0..4).map(|k| (texture(32, 32, k), vec!["0 0.5 0.5 0.25 0.25".to_string()])).collect();
    let ds = write_dataset(&dir, &items, 1);
    let sources: Vec<RgbImage> = items.iter().map(|(img, _)| img.clone()).collect();
    let aug = Augment { blur: 1, ..Augment::NONE };
    let mut cfg = LoaderConfig::training(4, 32, 32, 3, aug, Stop::Batches(4));
    cfg.workers = 0;
    let (mut blurred, mut untouched) = (0, 0);
    for b in batches(&ds, cfg) {
        for i in 0..b.n {
            let own: usize = b.paths[i].file_stem().unwrap().to_str().unwrap()[4..].parse().unwrap();
            let src = &sources[own];
            let (mut inside_changed, mut outside_changed) = (0, 0);
            for y in 0..32 {
                for x in 0..32 {
                    let s = &src.data[(y * 32 + x) * 3..(y * 32 + x) * 3 + 3];
                    let changed = pixel(&b, i, x, y) != [s[0], s[1], s[2]];
                    let inside = (12..20).contains(&x) && (12..20).contains(&y);
                    if changed && inside { inside_changed += 1 }
                    if changed && !inside { outside_changed += 1 }
                }
            }
            assert_eq!(inside_changed, 0, "blur=1 changed pixels inside the box");
            if outside_changed > 0 {
                blurred += 1;
                assert!(outside_changed > (32 * 32 - 64) / 2, "only {outside_changed} background pixels changed");
            } else {
                untouched += 1;
            }
        }
    }
    // Darknet blurs 2 of 3 images with blur=1.
    assert!(blurred >= 6 && untouched >= 1, "blurred {blurred}, untouched {untouched}");
}

#[test]
fn blur_n_blurs_whole_images_with_a_kernel_capped_by_the_smallest_box() {
    // A 1-D impulse through the 3-tap kernel [¼ ½ ¼]: 255 → 63.75, 127.5 → 64, 128.
    let mut img = solid(5, 1, [0, 0, 0]);
    img.data[6..9].copy_from_slice(&[255, 255, 255]);
    let red: Vec<u8> = gaussian_blur(&img, 3).data.chunks(3).map(|p| p[0]).collect();
    assert_eq!(red, vec![0, 64, 128, 64, 0]);
    assert!((gaussian_kernel(17)[8] - 0.13801).abs() < 1e-4, "σ 2.9 kernel centre");

    let dir = scratch("blurn");
    // Box 16 px wide: blur=9 is capped to ⌊16/8⌋ = 2, a 3×3 kernel.
    let items: Vec<_> = (0..3).map(|k| (texture(32, 32, k + 7), vec!["0 0.5 0.5 0.5 0.5".to_string()])).collect();
    let ds = write_dataset(&dir, &items, 1);
    let aug = Augment { blur: 9, ..Augment::NONE };
    let mut cfg = LoaderConfig::training(3, 32, 32, 8, aug, Stop::Batches(6));
    cfg.workers = 0;
    let mut whole = 0;
    for b in batches(&ds, cfg) {
        for i in 0..b.n {
            let own: usize = b.paths[i].file_stem().unwrap().to_str().unwrap()[4..].parse().unwrap();
            let got = &b.images[i * 3 * 1024..(i + 1) * 3 * 1024];
            if got == &planar(&gaussian_blur(&items[own].0, 3))[..] {
                whole += 1;
            }
        }
    }
    assert!(whole >= 2, "no image blurred whole with the capped kernel");
}

#[test]
fn gaussian_noise_is_zero_mean_with_the_cfg_sigma() {
    let dir = scratch("noise");
    let items: Vec<_> = (0..4).map(|k| (solid(32, 32, [128, 100, 150]), vec![format!("0 0.{} 0.5 0.2 0.2", k + 2)])).collect();
    let ds = write_dataset(&dir, &items, 1);
    let aug = Augment { gaussian_noise: 10, ..Augment::NONE };
    let mut cfg = LoaderConfig::training(4, 32, 32, 17, aug, Stop::Batches(4));
    cfg.workers = 0;
    let (mut noisy, mut clean) = (0, 0);
    for b in batches(&ds, cfg) {
        for i in 0..b.n {
            let plane = 1024;
            let diffs: Vec<f64> = (0..3 * plane)
                .map(|k| (b.images[i * 3 * plane + k] as f64 * 255.0) - [128.0, 100.0, 150.0][k / plane])
                .collect();
            if diffs.iter().all(|d| d.abs() < 1e-3) {
                clean += 1;
                continue;
            }
            noisy += 1;
            let n = diffs.len() as f64;
            let mean = diffs.iter().sum::<f64>() / n;
            let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
            // 3072 draws of σ = 10: standard error of the mean 0.18, of σ 0.13 (8-bit units).
            assert!(mean.abs() < 1.0, "noise mean {mean}");
            assert!((sd - 10.0).abs() < 1.0, "noise sd {sd}");
        }
    }
    // Darknet adds noise to half of the images.
    assert!(noisy >= 4 && clean >= 4, "noisy {noisy}, clean {clean}");
}
