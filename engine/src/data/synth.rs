//! Synthetic "shapes" dataset, written as an ordinary Darknet dataset (PNG images, label `.txt`
//! next to them, `train.txt`, `valid.txt`, `obj.names`, `obj.data` with relative paths), so that
//! Darknet itself can train on it from inside the directory.
//!
//! Each image: a smooth two-colour gradient with per-pixel noise, and a few filled shapes with
//! random kind, colour, size, aspect ratio and position (partially outside the image and partial
//! overlaps allowed). Labels are the exact pixel bounding boxes of what stays visible. Everything
//! comes from the seed: the same spec gives byte-identical files.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use rand_chacha::ChaCha8Rng;

use super::darknet::{DataFile, Label};
use super::image::{RgbImage, below, unit_f32};
use super::{DataError, Result, derive_seed};
use crate::rng::{Purpose, stream};

/// Shape kinds; class `k` of a synthetic dataset is `ShapeKind::ALL[k]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeKind {
    Rectangle,
    Ellipse,
    Triangle,
    Diamond,
    Cross,
    Ring,
}

impl ShapeKind {
    pub const ALL: [ShapeKind; 6] = [
        ShapeKind::Rectangle,
        ShapeKind::Ellipse,
        ShapeKind::Triangle,
        ShapeKind::Diamond,
        ShapeKind::Cross,
        ShapeKind::Ring,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Rectangle => "rectangle",
            ShapeKind::Ellipse => "ellipse",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Diamond => "diamond",
            ShapeKind::Cross => "cross",
            ShapeKind::Ring => "ring",
        }
    }

    /// Whether the point (u, v) of the unit box (0..1 each, v downwards) is inside the shape.
    /// `variant` (0..4) orients the triangle (apex up, down, left, right).
    fn contains(self, u: f32, v: f32, variant: u8) -> bool {
        let (a, b) = (2.0 * u - 1.0, 2.0 * v - 1.0);
        match self {
            ShapeKind::Rectangle => true,
            ShapeKind::Ellipse => a * a + b * b <= 1.0,
            ShapeKind::Triangle => match variant {
                0 => v >= a.abs(),
                1 => 1.0 - v >= a.abs(),
                2 => u >= b.abs(),
                _ => 1.0 - u >= b.abs(),
            },
            ShapeKind::Diamond => a.abs() + b.abs() <= 1.0,
            ShapeKind::Cross => a.abs() <= 1.0 / 3.0 || b.abs() <= 1.0 / 3.0,
            ShapeKind::Ring => {
                let r2 = a * a + b * b;
                (0.3025..=1.0).contains(&r2) // inner radius 0.55
            }
        }
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSpec {
    /// Number of classes = shape kinds used (1..=6).
    pub classes: usize,
    pub train_images: usize,
    pub val_images: usize,
    pub width: usize,
    pub height: usize,
    /// Object width/height as a fraction of the image side, drawn in [min_size, max_size].
    pub min_size: f32,
    pub max_size: f32,
    /// Objects per image: 1..=max_objects (fewer if placement fails).
    pub max_objects: usize,
    pub seed: u64,
    /// A classification set: one object per image, centred (its size still drawn from
    /// min/max_size), the class name in the file name and a `labels` list instead of box labels
    /// (Darknet's classifier layout).
    pub classify: bool,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            classes: 3,
            train_images: 256,
            val_images: 64,
            width: 96,
            height: 96,
            min_size: 0.15,
            max_size: 0.5,
            max_objects: 4,
            seed: 1,
            classify: false,
        }
    }
}

impl SynthSpec {
    /// Checks the limits the generator has (classes, sizes, objects) without writing anything.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(DataError::Config(format!("synthetic dataset: {m}")));
        if self.classes == 0 || self.classes > ShapeKind::ALL.len() {
            return bad(&format!("classes must be 1..={} (one per shape kind), got {}", ShapeKind::ALL.len(), self.classes));
        }
        if self.width < 8 || self.height < 8 {
            return bad("images must be at least 8×8");
        }
        if !(self.min_size > 0.0 && self.min_size <= self.max_size && self.max_size <= 1.0) {
            return bad("need 0 < min_size <= max_size <= 1");
        }
        if self.max_objects == 0 {
            return bad("max_objects must be at least 1");
        }
        Ok(())
    }

    /// Class names, in class order.
    pub fn names(&self) -> Vec<&'static str> {
        ShapeKind::ALL[..self.classes].iter().map(|k| k.name()).collect()
    }

    /// Renders image `index` of split `split` (0 = train, 1 = valid) with its labels.
    pub fn render(&self, split: u64, index: u64) -> (RgbImage, Vec<Label>) {
        let mut rng = stream(derive_seed(&[self.seed, split, index]), Purpose::Synthetic);
        let (w, h) = (self.width, self.height);
        let mut img = background(w, h, &mut rng);
        let mut owner = vec![0u8; w * h]; // 1 + object index that painted the pixel last
        let mut boxes: Vec<[i64; 4]> = Vec::new(); // x0, y0, x1, y1 (exclusive), unclipped
        let mut kinds = Vec::new();
        let wanted = if self.classify { 1 } else { 1 + below(&mut rng, self.max_objects) };
        for _ in 0..wanted {
            let kind = ShapeKind::ALL[below(&mut rng, self.classes)];
            let placed = if self.classify { Some(centre(self, &mut rng)) } else { place(self, &boxes, &mut rng) };
            let Some(b) = placed else { continue };
            let variant = below(&mut rng, 4) as u8;
            let colour = shape_colour(&img, &b, &mut rng);
            paint(&mut img, &mut owner, &b, kind, variant, colour, boxes.len() as u8 + 1, &mut rng);
            boxes.push(b);
            kinds.push(kind);
        }
        // Exact boxes of the visible pixels of each object.
        let mut ext = vec![[i64::MAX, i64::MAX, i64::MIN, i64::MIN]; boxes.len()];
        for (p, &o) in owner.iter().enumerate() {
            if o > 0 {
                let e = &mut ext[o as usize - 1];
                let (x, y) = ((p % w) as i64, (p / w) as i64);
                *e = [e[0].min(x), e[1].min(y), e[2].max(x + 1), e[3].max(y + 1)];
            }
        }
        let labels = ext
            .iter()
            .zip(&kinds)
            .filter(|(e, _)| e[0] < e[2])
            .map(|(e, k)| {
                let (l, r) = (e[0] as f32 / w as f32, e[2] as f32 / w as f32);
                let (t, b) = (e[1] as f32 / h as f32, e[3] as f32 / h as f32);
                let class = ShapeKind::ALL.iter().position(|x| x == k).unwrap_or(0) as u32;
                Label { class, x: (l + r) / 2.0, y: (t + b) / 2.0, w: r - l, h: b - t }
            })
            .collect();
        (img, labels)
    }

    /// Writes the dataset into `dir` (created if needed) and returns its parsed `obj.data`.
    pub fn write(&self, dir: &Path) -> Result<DataFile> {
        self.validate()?;
        if self.classify {
            return self.write_classification(dir);
        }
        let images = dir.join("images");
        fs::create_dir_all(&images).map_err(|e| DataError::io(&images, e))?;
        for (split, prefix, count, list) in [(0, "train", self.train_images, "train.txt"), (1, "val", self.val_images, "valid.txt")] {
            let mut listing = String::new();
            for i in 0..count {
                let (img, labels) = self.render(split, i as u64);
                let name = format!("{prefix}_{i:05}");
                let png = images.join(format!("{name}.png"));
                img.save_png(&png)?;
                let mut txt = String::new();
                for l in &labels {
                    let _ = writeln!(txt, "{} {:.6} {:.6} {:.6} {:.6}", l.class, l.x, l.y, l.w, l.h);
                }
                write_file(&images.join(format!("{name}.txt")), &txt)?;
                let _ = writeln!(listing, "images/{name}.png");
            }
            write_file(&dir.join(list), &listing)?;
        }
        write_file(&dir.join("obj.names"), &(self.names().join("\n") + "\n"))?;
        let data = format!(
            "classes = {}\ntrain = train.txt\nvalid = valid.txt\nnames = obj.names\nbackup = backup/\n",
            self.classes
        );
        let data_path = dir.join("obj.data");
        write_file(&data_path, &data)?;
        DataFile::load(&data_path)
    }
}

impl SynthSpec {
    /// A Darknet classifier dataset: `images/<split>_<i>_<class>.png`, lists, `labels.txt` (one
    /// class name per line; an image's class is the label its path contains) and `obj.data`.
    fn write_classification(&self, dir: &Path) -> Result<DataFile> {
        let images = dir.join("images");
        fs::create_dir_all(&images).map_err(|e| DataError::io(&images, e))?;
        let names = self.names();
        for (split, prefix, count, list) in [(0, "train", self.train_images, "train.txt"), (1, "val", self.val_images, "valid.txt")] {
            let mut listing = String::new();
            for i in 0..count {
                let (img, labels) = self.render(split, i as u64);
                let class = labels.first().map_or(0, |l| l.class as usize);
                let name = format!("{prefix}_{i:05}_{}", names[class]);
                img.save_png(&images.join(format!("{name}.png")))?;
                let _ = writeln!(listing, "images/{name}.png");
            }
            write_file(&dir.join(list), &listing)?;
        }
        write_file(&dir.join("labels.txt"), &(names.join("\n") + "\n"))?;
        let data = format!("classes = {}\ntrain = train.txt\nvalid = valid.txt\nlabels = labels.txt\ntop = 5\n", self.classes);
        let data_path = dir.join("obj.data");
        write_file(&data_path, &data)?;
        DataFile::load(&data_path)
    }
}

/// A box of random size (within the spec's limits) centred in the image.
fn centre(spec: &SynthSpec, rng: &mut ChaCha8Rng) -> [i64; 4] {
    let (iw, ih) = (spec.width as f32, spec.height as f32);
    let bw = (uniform(rng, spec.min_size, spec.max_size) * iw).max(3.0).round() as i64;
    let bh = (uniform(rng, spec.min_size, spec.max_size) * ih).max(3.0).round() as i64;
    let (x0, y0) = ((spec.width as i64 - bw) / 2, (spec.height as i64 - bh) / 2);
    [x0, y0, x0 + bw, y0 + bh]
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| DataError::io(path, e))
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * unit_f32(rng)
}

fn random_colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [0, 1, 2].map(|_| uniform(rng, 0.0, 255.0))
}

/// Linear gradient between two colours along a random direction, plus ±10 noise per channel.
fn background(w: usize, h: usize, rng: &mut ChaCha8Rng) -> RgbImage {
    let (c0, c1) = (random_colour(rng), random_colour(rng));
    let angle = uniform(rng, 0.0, std::f32::consts::TAU);
    let (dx, dy) = (angle.cos(), angle.sin());
    // Project pixel centres on the direction and normalise to [0,1].
    let corners = [(0.0, 0.0), (w as f32, 0.0), (0.0, h as f32), (w as f32, h as f32)];
    let proj: Vec<f32> = corners.iter().map(|(x, y)| x * dx + y * dy).collect();
    let lo = proj.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = proj.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut img = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let t = ((x as f32 + 0.5) * dx + (y as f32 + 0.5) * dy - lo) / (hi - lo);
            let p = (y * w + x) * 3;
            for c in 0..3 {
                let v = c0[c] + (c1[c] - c0[c]) * t + uniform(rng, -10.0, 10.0);
                img.data[p + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    img
}

/// A box for a new object: random size/aspect/position, at most a quarter cut off by each image
/// edge, overlapping no earlier box by more than 30% of the smaller one. `None` after 20 tries.
fn place(spec: &SynthSpec, boxes: &[[i64; 4]], rng: &mut ChaCha8Rng) -> Option<[i64; 4]> {
    let (iw, ih) = (spec.width as f32, spec.height as f32);
    for _ in 0..20 {
        let bw = (uniform(rng, spec.min_size, spec.max_size) * iw).max(3.0);
        let bh = (uniform(rng, spec.min_size, spec.max_size) * ih).max(3.0);
        let x0 = uniform(rng, -0.25 * bw, iw - 0.75 * bw).floor() as i64;
        let y0 = uniform(rng, -0.25 * bh, ih - 0.75 * bh).floor() as i64;
        let b = [x0, y0, x0 + bw.round() as i64, y0 + bh.round() as i64];
        let area = |b: &[i64; 4]| (b[2] - b[0]) * (b[3] - b[1]);
        let ok = boxes.iter().all(|o| {
            let iw = (b[2].min(o[2]) - b[0].max(o[0])).max(0);
            let ih = (b[3].min(o[3]) - b[1].max(o[1])).max(0);
            (iw * ih) as f32 <= 0.3 * area(&b).min(area(o)) as f32
        });
        if ok {
            return Some(b);
        }
    }
    None
}

/// A random colour far enough (L1 ≥ 150) from the background under the box centre.
fn shape_colour(img: &RgbImage, b: &[i64; 4], rng: &mut ChaCha8Rng) -> [f32; 3] {
    let cx = ((b[0] + b[2]) / 2).clamp(0, img.width as i64 - 1) as usize;
    let cy = ((b[1] + b[3]) / 2).clamp(0, img.height as i64 - 1) as usize;
    let p = (cy * img.width + cx) * 3;
    let bg = [0, 1, 2].map(|c| img.data[p + c] as f32);
    let mut colour = random_colour(rng);
    for _ in 0..16 {
        if (0..3).map(|c| (colour[c] - bg[c]).abs()).sum::<f32>() >= 150.0 {
            break;
        }
        colour = random_colour(rng);
    }
    colour
}

#[allow(clippy::too_many_arguments)]
fn paint(
    img: &mut RgbImage,
    owner: &mut [u8],
    b: &[i64; 4],
    kind: ShapeKind,
    variant: u8,
    colour: [f32; 3],
    id: u8,
    rng: &mut ChaCha8Rng,
) {
    let (bw, bh) = ((b[2] - b[0]) as f32, (b[3] - b[1]) as f32);
    let (w, h) = (img.width as i64, img.height as i64);
    for y in b[1].max(0)..b[3].min(h) {
        for x in b[0].max(0)..b[2].min(w) {
            let u = (x - b[0]) as f32 / bw + 0.5 / bw;
            let v = (y - b[1]) as f32 / bh + 0.5 / bh;
            if !kind.contains(u, v, variant) {
                continue;
            }
            let p = (y * w + x) as usize;
            owner[p] = id;
            let n = uniform(rng, -6.0, 6.0); // mild texture, same for all channels
            for c in 0..3 {
                img.data[p * 3 + c] = (colour[c] + n).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}
