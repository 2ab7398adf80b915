//! Image decoding, resizing and Darknet's training augmentation (darknet-spec §d).
//!
//! Darknet (OpenCV build) keeps images as 8-bit RGB until the very end: crop with mean-colour
//! fill, `cv::resize(INTER_LINEAR)` to the network size, horizontal flip, HSV jitter on 8-bit HSV,
//! then `/255` into planar floats. We do the same steps on 8-bit data:
//! - the resize emulates OpenCV's 8-bit INTER_LINEAR: half-pixel centres
//!   (`src = (dst + 0.5)·scale − 0.5`, clamped at the borders) and 11-bit fixed-point weights;
//! - RGB↔HSV follows OpenCV's 8-bit conversion (H in [0,180), S and V in [0,255]).
//!
//! An image already at the network size with augmentation off comes out as exactly pixels/255.
//! JPEG decoding (the `image` crate) may differ from libjpeg by ±1 in some pixels.

use std::path::Path;

use rand::RngCore;

use super::darknet::Label;
use super::{DataError, Result};

/// An 8-bit RGB image, interleaved (`[h][w][3]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize) -> RgbImage {
        RgbImage { width, height, data: vec![0; width * height * 3] }
    }

    /// Decodes a JPEG/PNG/BMP file (format from content); grey and alpha images become RGB.
    pub fn load(path: &Path) -> Result<RgbImage> {
        let err = |msg: String| DataError::Image { path: path.to_path_buf(), msg };
        let reader = ::image::ImageReader::open(path)
            .map_err(|e| DataError::io(path, e))?
            .with_guessed_format()
            .map_err(|e| DataError::io(path, e))?;
        let img = reader.decode().map_err(|e| err(e.to_string()))?.to_rgb8();
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(err("image has no pixels".into()));
        }
        Ok(RgbImage { width: w as usize, height: h as usize, data: img.into_raw() })
    }

    /// Reads only the header: the file opens, its format is one we decode and it has pixels.
    /// Much cheaper than [`RgbImage::load`] (a damaged body is found only by decoding).
    pub fn check_header(path: &Path) -> Result<(usize, usize)> {
        let err = |msg: String| DataError::Image { path: path.to_path_buf(), msg };
        let reader = ::image::ImageReader::open(path)
            .map_err(|e| DataError::io(path, e))?
            .with_guessed_format()
            .map_err(|e| DataError::io(path, e))?;
        if reader.format().is_none() {
            return Err(err("not a JPEG, PNG or BMP file".into()));
        }
        let (w, h) = reader.into_dimensions().map_err(|e| err(e.to_string()))?;
        if w == 0 || h == 0 {
            return Err(err("image has no pixels".into()));
        }
        Ok((w as usize, h as usize))
    }

    /// Writes the image as PNG (deterministic bytes for equal pixels).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let err = |msg: String| DataError::Encode { path: path.to_path_buf(), msg };
        let buf = ::image::RgbImage::from_raw(self.width as u32, self.height as u32, self.data.clone())
            .ok_or_else(|| err("buffer size does not match the image size".into()))?;
        buf.save_with_format(path, ::image::ImageFormat::Png).map_err(|e| err(e.to_string()))
    }

    /// Planar RGB floats `[3][h][w]` = pixel / 255 (f32 division, as Darknet's mat_to_image).
    pub fn to_planar(&self, out: &mut [f32]) {
        let plane = self.width * self.height;
        assert_eq!(out.len(), 3 * plane, "to_planar: output size");
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = px[c] as f32 / 255.0;
            }
        }
    }

    /// Per-channel mean, rounded like OpenCV's `setTo(cv::mean(img))` on an 8-bit image.
    pub fn mean_colour(&self) -> [u8; 3] {
        let mut sum = [0u64; 3];
        for px in self.data.chunks_exact(3) {
            for c in 0..3 {
                sum[c] += px[c] as u64;
            }
        }
        let n = (self.width * self.height) as f64;
        sum.map(|s| (s as f64 / n).round_ties_even().clamp(0.0, 255.0) as u8)
    }

    /// The rectangle (left, top, w, h) of this image; parts outside the image get `fill`.
    pub fn crop(&self, left: i64, top: i64, w: usize, h: usize, fill: [u8; 3]) -> RgbImage {
        let mut out = RgbImage { width: w, height: h, data: fill.repeat(w * h) };
        // Intersection of the crop with the image, in source coordinates.
        let x0 = left.max(0);
        let y0 = top.max(0);
        let x1 = (left + w as i64).min(self.width as i64);
        let y1 = (top + h as i64).min(self.height as i64);
        if x1 <= x0 || y1 <= y0 {
            return out;
        }
        let n = (x1 - x0) as usize * 3;
        for sy in y0..y1 {
            let src = (sy as usize * self.width + x0 as usize) * 3;
            let dst = ((sy - top) as usize * w + (x0 - left) as usize) * 3;
            out.data[dst..dst + n].copy_from_slice(&self.data[src..src + n]);
        }
        out
    }

    /// Mirror left↔right.
    pub fn flip_horizontal(&mut self) {
        let w = self.width;
        for row in self.data.chunks_exact_mut(w * 3) {
            for x in 0..w / 2 {
                for c in 0..3 {
                    row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
                }
            }
        }
    }

    /// Bilinear resize as OpenCV's `cv::resize(INTER_LINEAR)` on 8-bit images.
    pub fn resize_bilinear(&self, dw: usize, dh: usize) -> RgbImage {
        if dw == self.width && dh == self.height {
            return self.clone();
        }
        let (xs, xa) = linear_coeffs(self.width, dw);
        let (ys, ya) = linear_coeffs(self.height, dh);
        // Horizontal pass of the two source rows each output row needs (cached by row index).
        let hrow = |sy: usize, buf: &mut Vec<i32>| {
            buf.clear();
            let row = &self.data[sy * self.width * 3..(sy + 1) * self.width * 3];
            for (dx, &(s0, s1)) in xs.iter().enumerate() {
                let [a0, a1] = xa[dx];
                for c in 0..3 {
                    buf.push(row[s0 * 3 + c] as i32 * a0 + row[s1 * 3 + c] as i32 * a1);
                }
            }
        };
        let mut out = RgbImage::new(dw, dh);
        let (mut r0, mut r1) = (Vec::with_capacity(dw * 3), Vec::with_capacity(dw * 3));
        let mut cached: (usize, usize) = (usize::MAX, usize::MAX);
        for (dy, &(s0, s1)) in ys.iter().enumerate() {
            if cached != (s0, s1) {
                if cached.1 == s0 {
                    std::mem::swap(&mut r0, &mut r1);
                } else {
                    hrow(s0, &mut r0);
                }
                hrow(s1, &mut r1);
                cached = (s0, s1);
            }
            let [b0, b1] = ya[dy];
            let dst = &mut out.data[dy * dw * 3..(dy + 1) * dw * 3];
            for (k, d) in dst.iter_mut().enumerate() {
                // OpenCV's VResizeLinear 8u fixed-point combination (2 × 11-bit weights).
                let v = (((b0 * (r0[k] >> 4)) >> 16) + ((b1 * (r1[k] >> 4)) >> 16) + 2) >> 2;
                *d = v.clamp(0, 255) as u8;
            }
        }
        out
    }

    /// Darknet's HSV jitter: S·dsat, V·dexp, H + 179·dhue, each saturated to 8 bits, on OpenCV's
    /// 8-bit HSV, then back to RGB.
    pub fn adjust_hsv(&mut self, dhue: f32, dsat: f32, dexp: f32) {
        for px in self.data.chunks_exact_mut(3) {
            let [h, s, v] = rgb_to_hsv8(px[0], px[1], px[2]);
            let h = sat_u8(h as f32 + 179.0 * dhue);
            let s = sat_u8(s as f32 * dsat);
            let v = sat_u8(v as f32 * dexp);
            let [r, g, b] = hsv8_to_rgb(h, s, v);
            px.copy_from_slice(&[r, g, b]);
        }
    }
}

fn sat_u8(x: f32) -> u8 {
    x.round_ties_even().clamp(0.0, 255.0) as u8
}

/// Source indices and 11-bit weights of a 1-D linear resize (OpenCV's convention).
fn linear_coeffs(src: usize, dst: usize) -> (Vec<(usize, usize)>, Vec<[i32; 2]>) {
    const ONE: f32 = 2048.0; // INTER_RESIZE_COEF_SCALE
    let scale = 1.0 / (dst as f64 / src as f64);
    let mut idx = Vec::with_capacity(dst);
    let mut w = Vec::with_capacity(dst);
    for d in 0..dst {
        let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let mut s = f.floor() as i64;
        f -= s as f32;
        if s < 0 {
            s = 0;
            f = 0.0;
        }
        if s >= src as i64 - 1 {
            s = src as i64 - 1;
            f = 0.0;
        }
        let s = s as usize;
        idx.push((s, (s + 1).min(src - 1)));
        w.push([((1.0 - f) * ONE).round_ties_even() as i32, (f * ONE).round_ties_even() as i32]);
    }
    (idx, w)
}

/// OpenCV's 8-bit RGB→HSV (integer tables with 12-bit shift); H in [0,180).
pub fn rgb_to_hsv8(r: u8, g: u8, b: u8) -> [u8; 3] {
    const SHIFT: i32 = 12;
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let v = r.max(g).max(b);
    let vmin = r.min(g).min(b);
    let diff = v - vmin;
    let sdiv = if v == 0 { 0 } else { ((255 << SHIFT) as f64 / v as f64).round_ties_even() as i32 };
    let s = (diff * sdiv + (1 << (SHIFT - 1))) >> SHIFT;
    let hdiv = if diff == 0 { 0 } else { ((180 << SHIFT) as f64 / (6.0 * diff as f64)).round_ties_even() as i32 };
    let h = if v == r {
        g - b
    } else if v == g {
        b - r + 2 * diff
    } else {
        r - g + 4 * diff
    };
    let mut h = (h * hdiv + (1 << (SHIFT - 1))) >> SHIFT;
    if h < 0 {
        h += 180;
    }
    [h as u8, s as u8, v as u8]
}

/// OpenCV's 8-bit HSV→RGB (via floats; H·6/180 wrapped into [0,6)).
pub fn hsv8_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    let s = s as f32 * (1.0 / 255.0);
    let v = v as f32 * (1.0 / 255.0);
    let (r, g, b) = if s == 0.0 {
        (v, v, v)
    } else {
        let mut h = h as f32 * (6.0 / 180.0);
        while h >= 6.0 {
            h -= 6.0;
        }
        let mut sector = h.floor() as usize;
        h -= sector as f32;
        if sector >= 6 {
            sector = 0;
            h = 0.0;
        }
        let tab = [v, v * (1.0 - s), v * (1.0 - s * h), v * (1.0 - s * (1.0 - h))];
        // (b, g, r) indices per sector, as OpenCV's sector_data.
        const SECTOR: [[usize; 3]; 6] = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]];
        let [bi, gi, ri] = SECTOR[sector];
        (tab[ri], tab[gi], tab[bi])
    };
    [sat_u8(r * 255.0), sat_u8(g * 255.0), sat_u8(b * 255.0)]
}

/// Augmentation settings (Darknet `[net]` hue/saturation/exposure/flip/letter_box/mosaic/mixup/
/// blur/gaussian_noise and the last `[yolo]`'s jitter/resize). Mosaic, mixup, blur and noise are
/// described in [`super::mosaic`] and [`super::filters`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    pub jitter: f32,
    pub resize: f32,
    pub hue: f32,
    pub saturation: f32,
    pub exposure: f32,
    pub flip: bool,
    /// Keep the aspect ratio: the crop is widened/heightened to the network's aspect and the
    /// added area gets the mean colour (Darknet's training letter_box).
    pub letter_box: bool,
    /// Half of the images become a mosaic of four (Darknet `mosaic=1`); takes precedence over
    /// `mixup`, as in Darknet's parser.
    pub mosaic: bool,
    /// Darknet `mosaic_bound`: boxes clipped to their tile. Tiles are aligned exactly at the cut
    /// here, so boxes never cross it and both Darknet modes give this same clip.
    pub mosaic_bound: bool,
    /// Half of the images are blended 50/50 with a second one, keeping both label sets.
    pub mixup: bool,
    /// 0 off; 1 blur the background, keeping the boxes sharp; N > 1 also blurs whole images with
    /// a Gaussian kernel of size (N/2)·2+1.
    pub blur: u32,
    /// Standard deviation (8-bit units, at most 127) of noise added to half of the images; 0 off.
    pub gaussian_noise: u32,
}

impl Augment {
    /// No augmentation: the image is only stretched to the network size.
    pub const NONE: Augment = Augment {
        jitter: 0.0,
        resize: 1.0,
        hue: 0.0,
        saturation: 1.0,
        exposure: 1.0,
        flip: false,
        letter_box: false,
        mosaic: false,
        mosaic_bound: false,
        mixup: false,
        blur: 0,
        gaussian_noise: 0,
    };

    /// The settings of a Darknet cfg: `[net]` plus the jitter/resize of the last `[yolo]`.
    pub fn from_cfg(net: &crate::cfg::model::NetConfig, jitter: f32, resize: f32) -> Augment {
        Augment {
            jitter,
            resize,
            hue: net.hue,
            saturation: net.saturation,
            exposure: net.exposure,
            flip: net.flip,
            letter_box: net.letter_box,
            mosaic: net.mosaic,
            mosaic_bound: net.mosaic_bound,
            mixup: net.mixup,
            blur: net.blur,
            gaussian_noise: net.gaussian_noise,
        }
    }

    /// Whether batches combine several images (mosaic or mixup).
    pub fn combines_images(&self) -> bool {
        self.mosaic || self.mixup
    }

    /// Draws one image's random parameters. The same twelve values are always drawn, in the same
    /// order, so changing one setting does not shift the others' randomness.
    pub fn draw(&self, ow: usize, oh: usize, rng: &mut impl RngCore) -> AugmentDraw {
        let r: [f32; 12] = std::array::from_fn(|_| unit_f32(rng));
        let (owf, ohf) = (ow as f32, oh as f32);
        let dw = (owf * self.jitter) as i32;
        let dh = (ohf * self.jitter) as i32;
        let mut pleft = precalc(-dw as f32, dw as f32, r[0]) as i32;
        let mut pright = precalc(-dw as f32, dw as f32, r[1]) as i32;
        let mut ptop = precalc(-dh as f32, dh as f32, r[2]) as i32;
        let mut pbot = precalc(-dh as f32, dh as f32, r[3]) as i32;
        // Random resize: one draw shared by left&top, one by right&bottom (keeps the aspect).
        let down = if self.resize > 1.0 { 1.0 / self.resize } else { self.resize };
        let up = if self.resize < 1.0 { 1.0 / self.resize } else { self.resize };
        let min_rdw = (owf * (1.0 - 1.0 / down) / 2.0) as i32;
        let min_rdh = (ohf * (1.0 - 1.0 / down) / 2.0) as i32;
        let (max_rdw, max_rdh) = if self.resize < 1.0 {
            (0, 0)
        } else {
            ((owf * (1.0 - 1.0 / up) / 2.0) as i32, (ohf * (1.0 - 1.0 / up) / 2.0) as i32)
        };
        let addw = |p: i32, r: f32| (p as f32 + precalc(min_rdw as f32, max_rdw as f32, r)) as i32;
        let addh = |p: i32, r: f32| (p as f32 + precalc(min_rdh as f32, max_rdh as f32, r)) as i32;
        pleft = addw(pleft, r[4]);
        pright = addw(pright, r[5]);
        ptop = addh(ptop, r[4]);
        pbot = addh(pbot, r[5]);
        let dhue = precalc(-self.hue, self.hue, r[6]);
        let dsat = rand_scale(self.saturation, r[7], r[8]);
        let dexp = rand_scale(self.exposure, r[9], r[10]);
        let flip = self.flip && r[11] < 0.5;
        AugmentDraw { pleft, pright, ptop, pbot, flip, dhue, dsat, dexp }
    }
}

/// Uniform in [0,1) with 24 bits, written out so results do not depend on `rand`'s version.
pub(crate) fn unit_f32(rng: &mut impl RngCore) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Uniform integer in [0, n) (multiply-shift; bias ≤ n/2⁶⁴), independent of `rand`'s version.
pub(crate) fn below(rng: &mut impl RngCore, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// Darknet's rand_precalc_random: `r` in [0,1) mapped onto [min, max).
fn precalc(min: f32, max: f32, r: f32) -> f32 {
    let (lo, hi) = if max < min { (max, min) } else { (min, max) };
    r * (hi - lo) + lo
}

/// Darknet's rand_scale: U[1, s), inverted with probability ½.
fn rand_scale(s: f32, r: f32, coin: f32) -> f32 {
    let scale = precalc(1.0, s, r);
    if coin < 0.5 { scale } else { 1.0 / scale }
}

/// One image's random augmentation parameters (crop offsets in source pixels; positive = cut).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentDraw {
    pub pleft: i32,
    pub pright: i32,
    pub ptop: i32,
    pub pbot: i32,
    pub flip: bool,
    pub dhue: f32,
    pub dsat: f32,
    pub dexp: f32,
}

impl AugmentDraw {
    /// The identity draw (full image, no flip, no colour change).
    pub const IDENTITY: AugmentDraw =
        AugmentDraw { pleft: 0, pright: 0, ptop: 0, pbot: 0, flip: false, dhue: 0.0, dsat: 1.0, dexp: 1.0 };
}

/// The crop rectangle in source pixels and whether the result is mirrored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crop {
    pub orig_w: usize,
    pub orig_h: usize,
    pub left: i64,
    pub top: i64,
    pub width: usize,
    pub height: usize,
    pub flip: bool,
}

impl Crop {
    /// The crop of a draw on an `ow`×`oh` image for an `nw`×`nh` network (letter_box widens it).
    pub fn new(d: &AugmentDraw, ow: usize, oh: usize, nw: usize, nh: usize, letter_box: bool) -> Crop {
        let (mut pleft, mut pright, mut ptop, mut pbot) = (d.pleft, d.pright, d.ptop, d.pbot);
        if letter_box {
            let img_ar = ow as f32 / oh as f32;
            let net_ar = nw as f32 / nh as f32;
            if img_ar / net_ar > 1.0 {
                let delta_h = (ow as f32 / net_ar - oh as f32) / 2.0;
                ptop = (ptop as f32 - delta_h) as i32;
                pbot = (pbot as f32 - delta_h) as i32;
            } else {
                let delta_w = (oh as f32 * net_ar - ow as f32) / 2.0;
                pleft = (pleft as f32 - delta_w) as i32;
                pright = (pright as f32 - delta_w) as i32;
            }
        }
        // Guard against degenerate crops from extreme jitter settings.
        let width = (ow as i64 - pleft as i64 - pright as i64).max(1) as usize;
        let height = (oh as i64 - ptop as i64 - pbot as i64).max(1) as usize;
        Crop { orig_w: ow, orig_h: oh, left: pleft as i64, top: ptop as i64, width, height, flip: d.flip }
    }

    /// Darknet's correct_boxes: a normalised box of the original image in the network image,
    /// clamped to [0,1]. Returns (x, y, w, h) centre/size.
    pub fn map_box(&self, l: &Label) -> [f32; 4] {
        let sx = self.orig_w as f32 / self.width as f32;
        let sy = self.orig_h as f32 / self.height as f32;
        let dx = self.left as f32 / self.width as f32;
        let dy = self.top as f32 / self.height as f32;
        let mut left = (l.x - l.w / 2.0) * sx - dx;
        let mut right = (l.x + l.w / 2.0) * sx - dx;
        let top = ((l.y - l.h / 2.0) * sy - dy).clamp(0.0, 1.0);
        let bottom = ((l.y + l.h / 2.0) * sy - dy).clamp(0.0, 1.0);
        if self.flip {
            (left, right) = (1.0 - right, 1.0 - left);
        }
        let (left, right) = (left.clamp(0.0, 1.0), right.clamp(0.0, 1.0));
        [(left + right) / 2.0, (top + bottom) / 2.0, right - left, bottom - top]
    }
}

/// Applies a crop/resize/flip/HSV draw: the network-size 8-bit image.
pub fn augment_image(img: &RgbImage, crop: &Crop, d: &AugmentDraw, nw: usize, nh: usize) -> RgbImage {
    let full = crop.left == 0 && crop.top == 0 && crop.width == img.width && crop.height == img.height;
    let mut out = if full {
        img.resize_bilinear(nw, nh)
    } else {
        img.crop(crop.left, crop.top, crop.width, crop.height, img.mean_colour()).resize_bilinear(nw, nh)
    };
    if crop.flip {
        out.flip_horizontal();
    }
    if d.dsat != 1.0 || d.dexp != 1.0 || d.dhue != 0.0 {
        out.adjust_hsv(d.dhue, d.dsat, d.dexp);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_roundtrip_is_close() {
        for &(r, g, b) in &[(0u8, 0u8, 0u8), (255, 0, 0), (12, 200, 77), (90, 90, 91), (255, 255, 255), (3, 140, 250)] {
            let [h, s, v] = rgb_to_hsv8(r, g, b);
            assert!(h < 180);
            let back = hsv8_to_rgb(h, s, v);
            for (x, y) in [r, g, b].iter().zip(back) {
                assert!((*x as i32 - y as i32).abs() <= 3, "{:?} -> {:?}", (r, g, b), back);
            }
        }
    }

    #[test]
    fn resize_upscale_interpolates_at_half_pixel_centres() {
        // 2 px wide row [0, 200] upscaled to 4: OpenCV gives [0, 50, 150, 200].
        let img = RgbImage { width: 2, height: 1, data: vec![0, 0, 0, 200, 200, 200] };
        let out = img.resize_bilinear(4, 1);
        let red: Vec<u8> = out.data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(red, vec![0, 50, 150, 200]);
    }

    #[test]
    fn crop_fills_outside_with_colour() {
        let img = RgbImage { width: 2, height: 2, data: (0..12).map(|v| v as u8 * 10).collect() };
        let c = img.crop(-1, 0, 2, 1, [7, 8, 9]);
        assert_eq!(c.data, vec![7, 8, 9, 0, 10, 20]);
    }
}
