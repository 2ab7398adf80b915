//! Helpers shared by the GPU integration tests.

use std::sync::OnceLock;

use engine::gpu::{AdapterSelector, GpuBackend};
use engine::shapes::{ConvShape, IouLoss, YoloParams};

/// The default adapter, or `None` with a printed reason; with REQUIRE_GPU=1 (CI) a missing
/// adapter fails the test instead of skipping it.
#[allow(dead_code)] // not every test crate that includes `common` uses it
pub fn gpu_or_skip() -> Option<GpuBackend> {
    match GpuBackend::new(&AdapterSelector::default()) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("REQUIRE_GPU=1 but no GPU backend: {e}"),
        Err(e) => {
            println!("skipping: no GPU adapter ({e})");
            None
        }
    }
}

/// ‖a − b‖ / ‖a‖ (a is the reference).
#[allow(dead_code)] // not every test crate that includes `common` uses it
pub fn rel_norm_diff(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((*x - *y) as f64).powi(2)).sum::<f64>().sqrt();
    let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    num / den.max(1e-12)
}

/// One backend for every test of a test binary (creating a device per test is slow on
/// lavapipe); `None` with a printed reason, or a failure with REQUIRE_GPU=1.
#[allow(dead_code)] // not every test crate that includes `common` uses it
pub fn shared_gpu() -> Option<&'static GpuBackend> {
    static G: OnceLock<Result<GpuBackend, String>> = OnceLock::new();
    match G.get_or_init(|| GpuBackend::new(&AdapterSelector::default()).map_err(|e| e.to_string())) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("REQUIRE_GPU=1 but no GPU backend: {e}"),
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

pub mod darknet;
pub mod small;

/// `n` batches of `images` random RGB images of `side`×`side` with `boxes` random boxes each
/// (width and height in `wh`, relative; classes below `classes`, class 0 without a draw when
/// there is one class; 200 truth slots per image), from a seeded stream.
#[allow(dead_code)]
pub fn random_batches(
    n: usize, images: usize, side: usize, boxes: usize, wh: std::ops::Range<f32>, classes: usize, seed: u64,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let pixels = (0..images * 3 * side * side).map(|_| rng.random_range(0.0..1.0)).collect();
            let mut truths = vec![0.0f32; images * 200 * 5];
            for img in 0..images {
                for k in 0..boxes {
                    let b = &mut truths[(img * 200 + k) * 5..][..5];
                    b.copy_from_slice(&[
                        rng.random_range(0.2..0.8),
                        rng.random_range(0.2..0.8),
                        rng.random_range(wh.clone()),
                        rng.random_range(wh.clone()),
                        if classes > 1 { rng.random_range(0..classes) as f32 } else { 0.0 },
                    ]);
                }
            }
            (pixels, truths)
        })
        .collect()
}

/// yolov4-tiny's anchors (all six, as (w, h) pixels).
#[allow(dead_code)] // not every test crate that includes `common` uses it
pub const YOLOV4_TINY_ANCHORS: [(f32, f32); 6] = [(10., 14.), (23., 27.), (37., 58.), (81., 82.), (135., 169.), (344., 319.)];

/// A yolov4-tiny head (scale_x_y 1.05, iou_normalizer 0.07, ignore_thresh 0.7, CIoU; Darknet's
/// defaults for the rest) on a `w`×`h` grid of a `net`×`net` network.
#[allow(dead_code)]
pub fn yolov4_tiny_head(w: usize, h: usize, mask: &[usize], classes: usize, batch: usize, net: usize, max_boxes: usize) -> YoloParams {
    YoloParams {
        batch,
        w,
        h,
        classes,
        anchors: YOLOV4_TINY_ANCHORS.to_vec(),
        mask: mask.to_vec(),
        net_w: net,
        net_h: net,
        max_boxes,
        scale_x_y: 1.05,
        ignore_thresh: 0.7,
        iou_normalizer: 0.07,
        iou_loss: IouLoss::Ciou,
        ..YoloParams::default()
    }
}

/// Every tap of a convolution in the plain loop order (image, filter, output row, column, input
/// channel of the group, kernel row, column): `f(xi, wi, yi)` with the input, weight and output
/// indices that meet; taps that fall in the padding are skipped. The one reference loop nest the
/// conv tests build their f64 forward and gradients from.
#[allow(dead_code)]
pub fn conv_taps(s: &ConvShape, mut f: impl FnMut(usize, usize, usize)) {
    let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
    for b in 0..s.batch {
        for fi in 0..s.filters {
            let g = fi / mg;
            for oy in 0..s.out_h {
                for ox in 0..s.out_w {
                    let yi = ((b * s.filters + fi) * s.out_h + oy) * s.out_w + ox;
                    for c in 0..cg {
                        for ky in 0..s.size {
                            for kx in 0..s.size {
                                let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xi = ((b * s.c + g * cg + c) * s.h + iy as usize) * s.w + ix as usize;
                                f(xi, ((fi * cg + c) * s.size + ky) * s.size + kx, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}
