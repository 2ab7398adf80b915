//! Mosaic and mixup: training images made of several source images (Darknet data.c:
//! load_data_detection with `use_mixup` 3 and 1, blend_truth_mosaic, blend_truth).
//!
//! Every source image first gets its own full augmentation (jitter crop, resize, flip, HSV, blur,
//! noise) to the network size, exactly as a single image would.
//!
//! Granularity: Darknet flips one coin per loader call (`random_gen() % 2`), i.e. per thread's
//! share of a batch, so about half of the images are combined. We flip it per image: the same
//! expected half, every mini-batch mixes both kinds as Darknet's per-thread shares do, and the
//! result cannot depend on the number of loader threads (Darknet's shares do).
//!
//! Mosaic (`mosaic=1`): a cut point `cut_x ~ U{⌊0.2·W⌋ … ⌊0.8·W⌋}`, `cut_y` likewise, splits the
//! output into four tiles. The slot's own image goes to a random tile, three images drawn
//! uniformly from the dataset (with replacement, as Darknet) to the others. Each tile shows the
//! corner of its augmented image that faces the cut, shifted past any fill border so the image's
//! edge meets the cut; with probability ½ per tile the crop offsets are first moved to the side
//! facing the cut (Darknet's "move each 2nd image to the corner"). Boxes are shifted with their
//! tile, clipped to it, and dropped unless wider and taller than one pixel; tiles' boxes are
//! concatenated in tile order up to `max_boxes`. Darknet measures the fill border with the
//! original width instead of the crop width, which misaligns a tile by a few pixels when the crop
//! is wider than the image; we use the crop width, so boxes never cross the cut.
//!
//! Mixup (`mixup=1`, ignored when mosaic is on as in Darknet's parser): the slot's image and one
//! drawn from the dataset are blended 0.5/0.5 in float (after /255); the truths are the slot
//! image's followed by the partner's, up to `max_boxes`.
//!
//! Randomness: the slot's own image uses its usual stream (seed, epoch, image); the composition
//! (coin, cut point, tile, partners, corner moves) a stream of (seed, epoch, image, MIX); partner
//! `j` its augmentation from (seed, epoch, image, MIX, j). All are pure functions of the slot.

use rand::RngCore;

use super::image::{Crop, RgbImage, below, unit_f32};

/// Tag that separates the composition streams from the per-image augmentation streams.
pub(crate) const MIX_TAG: u64 = 0x6d69_7875_705f_6d6f;

/// One source image after its own augmentation.
#[derive(Clone, Debug)]
pub struct Source {
    /// Network-size 8-bit image.
    pub image: RgbImage,
    /// Truths `[x, y, w, h, class]`, normalised to this image.
    pub boxes: Vec<[f32; 5]>,
    /// The crop that made it (for the fill borders).
    pub crop: Crop,
}

/// The random choices of one slot's composition (always drawn in full, in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixDraw {
    /// Combine this slot (probability ½).
    pub apply: bool,
    pub cut_x: usize,
    pub cut_y: usize,
    /// Tile (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of the slot's own image.
    pub own_tile: usize,
    /// Dataset indices of the other images (mixup uses the first).
    pub partners: [usize; 3],
    /// Per tile: move the crop offsets to the side facing the cut.
    pub to_corner: [bool; 4],
}

impl MixDraw {
    pub fn draw(net_w: usize, net_h: usize, dataset_len: usize, rng: &mut impl RngCore) -> MixDraw {
        let apply = unit_f32(rng) < 0.5;
        let cut_x = cut_point(net_w, rng);
        let cut_y = cut_point(net_h, rng);
        let own_tile = below(rng, 4);
        let partners = std::array::from_fn(|_| below(rng, dataset_len));
        let to_corner = std::array::from_fn(|_| unit_f32(rng) < 0.5);
        MixDraw { apply, cut_x, cut_y, own_tile, partners, to_corner }
    }
}

/// Darknet's `rand_int(n·0.2, n·0.8)`: inclusive bounds truncated to integers.
fn cut_point(n: usize, rng: &mut impl RngCore) -> usize {
    let (lo, hi) = ((n as f32 * 0.2) as usize, (n as f32 * 0.8) as usize);
    lo + below(rng, hi - lo + 1)
}

/// Tile rectangle `(x0, y0, x1, y1)` in the output.
pub fn tile_rect(tile: usize, cut_x: usize, cut_y: usize, w: usize, h: usize) -> (usize, usize, usize, usize) {
    let (x0, x1) = if tile % 2 == 0 { (0, cut_x) } else { (cut_x, w) };
    let (y0, y1) = if tile < 2 { (0, cut_y) } else { (cut_y, h) };
    (x0, y0, x1, y1)
}

/// Darknet's "move to the corner": all horizontal crop offset on the side of the augmented
/// (flipped) image that faces the cut, likewise vertically; the crop's size is unchanged.
pub fn crop_towards_cut(crop: &Crop, tile: usize) -> Crop {
    let inner_right = tile % 2 == 0;
    let inner_bottom = tile < 2;
    let mut c = *crop;
    // In source coordinates the horizontal sides swap when the image is mirrored.
    c.left = if inner_right != crop.flip { 0 } else { crop.orig_w as i64 - crop.width as i64 };
    c.top = if inner_bottom { 0 } else { crop.orig_h as i64 - crop.height as i64 };
    c
}

/// Fill border widths `[left, right, top, bottom]` of a source's network image, in whole pixels.
fn fill_borders(c: &Crop, nw: usize, nh: usize) -> [usize; 4] {
    let px = |outside: i64, size: usize, n: usize| (outside.max(0) as usize * n) / size;
    let src_left = px(-c.left, c.width, nw);
    let src_right = px(c.left + c.width as i64 - c.orig_w as i64, c.width, nw);
    let top = px(-c.top, c.height, nh);
    let bottom = px(c.top + c.height as i64 - c.orig_h as i64, c.height, nh);
    let (left, right) = if c.flip { (src_right, src_left) } else { (src_left, src_right) };
    [left, right, top, bottom]
}

/// Copies the facing corner of `src` into `tile` of `out` and appends its boxes (shifted,
/// clipped to the tile, kept when wider and taller than one pixel) to `truths`.
pub fn place_tile(out: &mut RgbImage, src: &Source, tile: usize, cut_x: usize, cut_y: usize, truths: &mut Vec<[f32; 5]>) {
    let (nw, nh) = (out.width, out.height);
    let (x0, y0, x1, y1) = tile_rect(tile, cut_x, cut_y, nw, nh);
    let [left, right, top, bottom] = fill_borders(&src.crop, nw, nh);
    // Origin of the tile in the source image: the source's real edge lands on the cut.
    let sx0 = if tile % 2 == 0 { nw - cut_x - right.min(nw - cut_x) } else { left.min(cut_x) };
    let sy0 = if tile < 2 { nh - cut_y - bottom.min(nh - cut_y) } else { top.min(cut_y) };
    let tw = x1 - x0;
    for y in y0..y1 {
        let s = ((y - y0 + sy0) * nw + sx0) * 3;
        let d = (y * nw + x0) * 3;
        out.data[d..d + tw * 3].copy_from_slice(&src.image.data[s..s + tw * 3]);
    }
    let (dx, dy) = (x0 as f32 - sx0 as f32, y0 as f32 - sy0 as f32);
    for b in &src.boxes {
        let l = ((b[0] - b[2] / 2.0) * nw as f32 + dx).clamp(x0 as f32, x1 as f32);
        let r = ((b[0] + b[2] / 2.0) * nw as f32 + dx).clamp(x0 as f32, x1 as f32);
        let t = ((b[1] - b[3] / 2.0) * nh as f32 + dy).clamp(y0 as f32, y1 as f32);
        let bt = ((b[1] + b[3] / 2.0) * nh as f32 + dy).clamp(y0 as f32, y1 as f32);
        if r - l > 1.0 && bt - t > 1.0 {
            let (w, h) = (nw as f32, nh as f32);
            truths.push([(l + r) / 2.0 / w, (t + bt) / 2.0 / h, (r - l) / w, (bt - t) / h, b[4]]);
        }
    }
}

/// Mixup's image: `0.5·a + 0.5·b` of the planar /255 images, into `out` (`[3][h][w]`).
pub fn blend_planar(a: &RgbImage, b: &RgbImage, out: &mut [f32]) {
    let mut pb = vec![0f32; out.len()];
    a.to_planar(out);
    b.to_planar(&mut pb);
    for (o, v) in out.iter_mut().zip(&pb) {
        *o = *o * 0.5 + *v * 0.5;
    }
}
