//! What `runner detect` reads and where it writes: image inputs (files, folders, lists), output
//! paths, and the network-input geometry (stretch or letterbox) with its inverse for boxes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use engine::data::image::RgbImage;
use engine::eval::Bbox;

/// Extensions taken from a folder (lower case; compared case-insensitively).
pub const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

fn ext_lower(p: &Path) -> String {
    p.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default()
}

/// Every image named by `inputs`, in order: a file as is, a folder's images sorted by name (not
/// recursive), a `.txt` list's lines (relative entries against the list's folder, then the
/// current directory, as Darknet's valid lists are read here).
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}: cannot read the folder", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && IMAGE_EXTS.contains(&ext_lower(f).as_str()))
                .collect();
            if found.is_empty() {
                bail!("{}: no .jpg, .jpeg, .png or .bmp images in this folder", p.display());
            }
            found.sort();
            out.extend(found);
        } else if ext_lower(p) == "txt" {
            out.extend(read_list(p)?);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such image, folder or .txt list", p.display());
        }
    }
    Ok(out)
}

/// Reads an image list: one path per line; blank lines and `#` comments ignored.
fn read_list(list: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(list).with_context(|| format!("{}: cannot read the image list", list.display()))?;
    let dir = list.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let e = Path::new(entry);
        let candidates = if e.is_absolute() { vec![e.to_path_buf()] } else { vec![dir.join(e), e.to_path_buf()] };
        match candidates.into_iter().find(|c| c.is_file()) {
            Some(c) => out.push(c),
            None => bail!("{}:{}: image `{entry}` not found", list.display(), i + 1),
        }
    }
    if out.is_empty() {
        bail!("{}: the image list is empty", list.display());
    }
    Ok(out)
}

/// Pairs each image with its output `<out>/<stem>.png`. Two images with one stem, or an output
/// that is its own input, are errors (never overwrite a source image, even with --force).
pub fn output_paths(images: &[PathBuf], out: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut seen: HashMap<PathBuf, &PathBuf> = HashMap::new();
    let mut plan = Vec::with_capacity(images.len());
    for img in images {
        let stem = img.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let png = out.join(format!("{stem}.png"));
        if let Some(first) = seen.insert(png.clone(), img) {
            bail!("{} and {} would both be written to {}", first.display(), img.display(), png.display());
        }
        if let (Ok(a), Ok(b)) = (img.canonicalize(), png.canonicalize())
            && a == b
        {
            bail!("{}: the output would replace this input image; choose another --out", img.display());
        }
        plan.push((img.clone(), png));
    }
    Ok(plan)
}

/// How an `ow`×`oh` image becomes the `nw`×`nh` network input, and back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub ow: usize,
    pub oh: usize,
    pub nw: usize,
    pub nh: usize,
    /// Letterbox: the resized image's size and its offset in the input.
    pub letterbox: Option<(usize, usize, usize, usize)>,
}

impl Geometry {
    /// Stretch (Darknet's resize_image) or letterbox (letterbox_image: fit inside, keep aspect,
    /// centre, pad with 0.5).
    pub fn new(ow: usize, oh: usize, nw: usize, nh: usize, letterbox: bool) -> Geometry {
        let letterbox = letterbox.then(|| {
            let (w, h) = if (nw as f32 / ow as f32) < (nh as f32 / oh as f32) {
                (nw, (oh * nw / ow).clamp(1, nh))
            } else {
                ((ow * nh / oh).clamp(1, nw), nh)
            };
            (w, h, (nw - w) / 2, (nh - h) / 2)
        });
        Geometry { ow, oh, nw, nh, letterbox }
    }

    /// Writes the network input `[3][nh][nw]` (RGB / 255).
    pub fn fill_input(&self, img: &RgbImage, planar: &mut [f32]) {
        let Some((w, h, dx, dy)) = self.letterbox else {
            img.resize_bilinear(self.nw, self.nh).to_planar(planar);
            return;
        };
        planar.fill(0.5);
        let r = img.resize_bilinear(w, h);
        let plane = self.nw * self.nh;
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    planar[c * plane + (y + dy) * self.nw + x + dx] = r.data[(y * w + x) * 3 + c] as f32 / 255.0;
                }
            }
        }
    }

    /// A box relative to the network input as (left, top, right, bottom) pixels of the original
    /// image, clamped to it. Letterbox is undone with the offset actually used (Darknet's
    /// correct_yolo_boxes uses (nw − w)/2 unrounded: at most half a network pixel apart).
    pub fn to_pixels(&self, b: &Bbox) -> [f32; 4] {
        let (x, y, w, h) = match self.letterbox {
            None => (b.x, b.y, b.w, b.h),
            Some((lw, lh, dx, dy)) => {
                let (nw, nh, lw, lh) = (self.nw as f32, self.nh as f32, lw as f32, lh as f32);
                ((b.x * nw - dx as f32) / lw, (b.y * nh - dy as f32) / lh, b.w * nw / lw, b.h * nh / lh)
            }
        };
        let (ow, oh) = (self.ow as f32, self.oh as f32);
        [
            ((x - w / 2.0) * ow).clamp(0.0, ow),
            ((y - h / 2.0) * oh).clamp(0.0, oh),
            ((x + w / 2.0) * ow).clamp(0.0, ow),
            ((y + h / 2.0) * oh).clamp(0.0, oh),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_fits_wide_images_and_maps_boxes_back() {
        // 200×100 into 64×64: 64×32 at offset (0, 16).
        let g = Geometry::new(200, 100, 64, 64, true);
        assert_eq!(g.letterbox, Some((64, 32, 0, 16)));
        // The box covering the resized image's area is the whole original image.
        let b = Bbox::new(0.5, 0.5, 1.0, 32.0 / 64.0);
        let p = g.to_pixels(&b);
        for (u, v) in p.iter().zip([0.0, 0.0, 200.0, 100.0]) {
            assert!((u - v).abs() < 1e-3, "{p:?}");
        }
        let img = RgbImage { width: 200, height: 100, data: vec![255; 200 * 100 * 3] };
        let mut planar = vec![0.0; 3 * 64 * 64];
        g.fill_input(&img, &mut planar);
        assert_eq!(planar[15 * 64], 0.5, "padding row");
        assert_eq!(planar[16 * 64], 1.0, "first image row");
        assert_eq!(planar[47 * 64 + 63], 1.0, "last image row");
        assert_eq!(planar[48 * 64], 0.5, "padding below");
    }

    #[test]
    fn stretch_maps_normalised_boxes_to_pixels() {
        let g = Geometry::new(640, 480, 416, 416, false);
        assert_eq!(g.to_pixels(&Bbox::new(0.5, 0.5, 0.5, 0.5)), [160.0, 120.0, 480.0, 360.0]);
        // Clamped to the image.
        assert_eq!(g.to_pixels(&Bbox::new(0.0, 1.0, 0.5, 0.5)), [0.0, 360.0, 160.0, 480.0]);
    }

    #[test]
    fn duplicate_stems_are_refused() {
        let imgs = [PathBuf::from("a/x.jpg"), PathBuf::from("b/x.png")];
        let e = output_paths(&imgs, Path::new("out")).unwrap_err().to_string();
        assert!(e.contains("a/x.jpg") && e.contains("b/x.png") && e.contains("x.png"), "{e}");
    }
}
