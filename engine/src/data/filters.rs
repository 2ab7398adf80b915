//! Darknet's `blur` and `gaussian_noise` augmentations (image_opencv.cpp:image_data_augmentation,
//! after the HSV step), on the 8-bit network-size image of one source image.
//!
//! - Each image draws one of {none, background blur, whole-image blur} uniformly (Darknet's
//!   `rand_int(0, 2)`); with `blur=1` the last choice is a background blur too, so background blur
//!   happens to 2/3 of the images. Background blur: the image blurred with a 17×17 Gaussian (the
//!   kernel Darknet's code uses; its wiki says 31), then the pixels of every truth box copied back
//!   sharp. Whole-image blur: kernel size (N/2)·2+1, reduced to ⌊smallest box side in pixels / 8⌋
//!   when that is smaller (0 without boxes, as Darknet), which may turn it into a background blur.
//!   Kernel as OpenCV's `getGaussianKernel(k, 0)`, border reflect-101; computed in f32 and
//!   rounded once, so a pixel may differ from OpenCV's fixed-point 8-bit path by ±1.
//! - Noise: half of the images get independent N(0, σ) per channel and pixel, σ = min(N, 127),
//!   rounded and added with saturation. Deliberate difference: Darknet draws the noise into an
//!   8-bit matrix, which clips its negative half (the image only brightens); we add the zero-mean
//!   noise its `cv::randn(noise, 0, σ)` call asks for.

use rand::RngCore;

use super::image::{Augment, RgbImage, below, unit_f32};

/// Kernel of the background blur (Darknet `blur=1`).
const BACKGROUND_KERNEL: usize = 17;

/// What blur/noise one image gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterDraw {
    /// 0 none, 1 background blur, k > 1 whole-image blur with kernel (k/2)·2+1.
    pub blur: u32,
    /// Noise standard deviation in 8-bit units (0: none).
    pub noise: u32,
}

impl FilterDraw {
    pub const NONE: FilterDraw = FilterDraw { blur: 0, noise: 0 };
}

impl Augment {
    /// Draws one image's blur/noise choice; `boxes` are its truths in the network image. Two
    /// values are always drawn when either option is on, so one does not shift the other.
    pub fn draw_filters(&self, boxes: &[[f32; 5]], net_w: usize, net_h: usize, rng: &mut impl RngCore) -> FilterDraw {
        if self.blur == 0 && self.gaussian_noise == 0 {
            return FilterDraw::NONE;
        }
        let choice = below(rng, 3);
        let coin = unit_f32(rng);
        let mut blur = match (self.blur, choice) {
            (0, _) | (_, 0) => 0,
            (_, 1) => 1,
            (b, _) => b,
        };
        if blur > 1 {
            // Darknet's fill_truth_detection min_w_h: the smallest box side, in whole pixels.
            let min_side = boxes
                .iter()
                .map(|b| ((b[2] * net_w as f32) as u32).min((b[3] * net_h as f32) as u32))
                .min()
                .unwrap_or(0);
            blur = blur.min(min_side / 8);
        }
        let noise = if coin >= 0.5 { self.gaussian_noise.min(127) } else { 0 };
        FilterDraw { blur, noise }
    }
}

/// Applies a blur/noise draw in place; `boxes` (normalised x, y, w, h, class) stay sharp under a
/// background blur. Noise values come from `rng`.
pub fn apply_filters(img: &mut RgbImage, f: &FilterDraw, boxes: &[[f32; 5]], rng: &mut impl RngCore) {
    match f.blur {
        0 => {}
        1 => blur_background(img, boxes),
        k => *img = gaussian_blur(img, (k as usize / 2) * 2 + 1),
    }
    if f.noise > 0 {
        add_gaussian_noise(img, f.noise as f32, rng);
    }
}

/// Blurs everything outside the boxes (Darknet's `blur == 1`): box rectangles use Darknet's
/// truncation `left = ⌊(x − w/2)·W⌋, width = ⌊w·W⌋`, intersected with the image.
pub fn blur_background(img: &mut RgbImage, boxes: &[[f32; 5]]) {
    let mut out = gaussian_blur(img, BACKGROUND_KERNEL);
    let (iw, ih) = (img.width as i64, img.height as i64);
    for b in boxes {
        let left = ((b[0] - b[2] / 2.0) * iw as f32) as i64;
        let top = ((b[1] - b[3] / 2.0) * ih as f32) as i64;
        let right = left + (b[2] * iw as f32) as i64;
        let bottom = top + (b[3] * ih as f32) as i64;
        let (x0, x1) = (left.clamp(0, iw) as usize, right.clamp(0, iw) as usize);
        let (y0, y1) = (top.clamp(0, ih) as usize, bottom.clamp(0, ih) as usize);
        if x1 <= x0 {
            continue;
        }
        for y in y0..y1 {
            let r = (y * img.width + x0) * 3..(y * img.width + x1) * 3;
            out.data[r.clone()].copy_from_slice(&img.data[r]);
        }
    }
    *img = out;
}

/// OpenCV's `getGaussianKernel(k, 0)`: fixed tables for k ≤ 7, else σ = 0.3·((k−1)/2 − 1) + 0.8.
pub fn gaussian_kernel(k: usize) -> Vec<f32> {
    match k {
        1 => vec![1.0],
        3 => vec![0.25, 0.5, 0.25],
        5 => vec![0.0625, 0.25, 0.375, 0.25, 0.0625],
        7 => vec![0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
        _ => {
            let sigma = 0.3 * ((k as f64 - 1.0) * 0.5 - 1.0) + 0.8;
            let c = (k / 2) as f64;
            let w: Vec<f64> = (0..k).map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
            let sum: f64 = w.iter().sum();
            w.iter().map(|v| (v / sum) as f32).collect()
        }
    }
}

/// Index `i` folded into [0, n) by reflection without repeating the edge (OpenCV BORDER_REFLECT_101).
fn reflect101(mut i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * n - 2 - i };
    }
    i as usize
}

/// Separable Gaussian blur with an odd kernel size `k`, reflect-101 borders.
pub fn gaussian_blur(img: &RgbImage, k: usize) -> RgbImage {
    let kernel = gaussian_kernel(k);
    let r = (k / 2) as i64;
    let (w, h) = (img.width, img.height);
    // Horizontal pass into f32, then vertical pass with one final rounding.
    let mut tmp = vec![0f32; w * h * 3];
    for y in 0..h {
        let row = &img.data[y * w * 3..(y + 1) * w * 3];
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0f32;
                for (j, kv) in kernel.iter().enumerate() {
                    let sx = reflect101(x as i64 + j as i64 - r, w);
                    acc += kv * row[sx * 3 + c] as f32;
                }
                tmp[(y * w + x) * 3 + c] = acc;
            }
        }
    }
    let mut out = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0f32;
                for (j, kv) in kernel.iter().enumerate() {
                    let sy = reflect101(y as i64 + j as i64 - r, h);
                    acc += kv * tmp[(sy * w + x) * 3 + c];
                }
                out.data[(y * w + x) * 3 + c] = acc.round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Adds rounded N(0, σ) noise to every channel of every pixel, saturating to [0, 255].
pub fn add_gaussian_noise(img: &mut RgbImage, sigma: f32, rng: &mut impl RngCore) {
    let mut spare: Option<f64> = None;
    for v in img.data.iter_mut() {
        let z = match spare.take() {
            Some(z) => z,
            None => {
                let (a, b) = box_muller(rng);
                spare = Some(b);
                a
            }
        };
        let n = (z * sigma as f64).round_ties_even();
        *v = (*v as f64 + n).clamp(0.0, 255.0) as u8;
    }
}

/// Two independent standard normals from two uniforms (Box–Muller), from 32-bit draws.
fn box_muller(rng: &mut impl RngCore) -> (f64, f64) {
    // u1 in (0, 1] keeps ln finite.
    let u1 = (rng.next_u32() as f64 + 1.0) / 4_294_967_296.0;
    let u2 = rng.next_u32() as f64 / 4_294_967_296.0;
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    (r * t.cos(), r * t.sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sum_to_one_and_are_symmetric() {
        for k in [1, 3, 5, 7, 9, 17, 31] {
            let g = gaussian_kernel(k);
            assert_eq!(g.len(), k);
            assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            for i in 0..k {
                assert_eq!(g[i], g[k - 1 - i]);
            }
        }
    }

    #[test]
    fn reflect101_folds_without_repeating_the_edge() {
        let got: Vec<usize> = (-3..7).map(|i| reflect101(i, 4)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(reflect101(-5, 1), 0);
    }

    #[test]
    fn blur_keeps_a_constant_image() {
        let img = RgbImage { width: 5, height: 3, data: vec![77; 45] };
        assert_eq!(gaussian_blur(&img, 17), img);
    }
}
