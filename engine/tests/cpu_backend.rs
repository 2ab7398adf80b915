//! The fast CPU backend gives the reference's numbers bit for bit, whatever its thread count:
//! - its convolutions (column tiles, images sharing a GEMM, weight-gradient tiles, on 1–3
//!   threads) equal one untiled GEMM per image (the backend's own call, `run_gemm_call`) over a
//!   textbook im2col;
//! - its fused composite ops equal the plain ops of [`CpuBackend::reference`] for every
//!   activation, with and without a pre-activation buffer, in place or not, for both statistics
//!   and both backward forms;
//! - YOLOv4-tiny trained three steps on 1, 2 and 3 threads and on the reference gives the same
//!   losses and the same weights, gradients and BN statistics, float for float.

use engine::Backend;
use engine::backend::{BnTensors, Store};
use engine::cpu::{CpuBackend, CpuBuf, GemmCall};
use engine::network::{BuildOptions, Network};
use engine::shapes::{Activation, BnBackward, BnStats, ChannelShape, ConvShape};
use engine::train::{Optimizer, Trainer};

fn random(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| engine::rng::uniform(seed, i as u32) * 2.0 - 1.0).collect()
}

fn up(b: &CpuBackend, v: &[f32]) -> CpuBuf {
    let buf = b.alloc(v.len());
    b.upload(&buf, v);
    buf
}

/// Bit patterns, so that -0.0 vs 0.0 and NaN payloads count as differences too.
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

// ---- convolution against one GEMM per image ----------------------------------------------------

/// Every tap of one image and group's im2col that reads a real pixel, in (channel, ky, kx, oy,
/// ox) order: (index into col, index into the image's channels).
fn taps(s: &ConvShape, cg: usize) -> Vec<(usize, usize)> {
    let n = s.out_h * s.out_w;
    let mut out = vec![];
    for ch in 0..cg {
        for ky in 0..s.size {
            for kx in 0..s.size {
                for oy in 0..s.out_h {
                    for ox in 0..s.out_w {
                        let (iy, ix) = ((oy * s.stride + ky) as isize - s.pad as isize, (ox * s.stride + kx) as isize - s.pad as isize);
                        if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w {
                            out.push((((ch * s.size + ky) * s.size + kx) * n + oy * s.out_w + ox, (ch * s.h + iy as usize) * s.w + ix as usize));
                        }
                    }
                }
            }
        }
    }
    out
}

/// `c (m×n) = a·b + beta·c` by one untiled, single-threaded GEMM call of the backend
/// (`ta`/`tb`: stored transposed).
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, beta: f32, c: &mut [f32]) {
    let sa = if ta { (1, m as isize) } else { (k as isize, 1) };
    let sb = if tb { (1, k as isize) } else { (n as isize, 1) };
    engine::cpu::run_gemm_call(&GemmCall { m, k, n, a: sa, b: sb, beta, ldc: n }, a, b, c);
}

/// y, dx (added to `dx0`) and dw (added to `dw0`) as one GEMM per image and group.
fn per_image(s: &ConvShape, x: &[f32], w: &[f32], dy: &[f32], dx0: &[f32], dw0: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (cg, m) = (s.c / s.groups, s.filters / s.groups);
    let (k, n, hw) = (cg * s.size * s.size, s.out_h * s.out_w, s.h * s.w);
    let (mut y, mut dx, mut dw) = (vec![0.0; s.output_len()], dx0.to_vec(), dw0.to_vec());
    for b in 0..s.batch {
        for g in 0..s.groups {
            let xg = &x[(b * s.c + g * cg) * hw..][..cg * hw];
            let wg = &w[g * m * k..][..m * k];
            let dyg = &dy[(b * s.filters + g * m) * n..][..m * n];
            let taps = taps(s, cg);
            let mut col = vec![0.0; k * n];
            for &(c, i) in &taps {
                col[c] = xg[i];
            }
            gemm(m, k, n, wg, false, &col, false, 0.0, &mut y[(b * s.filters + g * m) * n..][..m * n]);
            gemm(m, n, k, dyg, false, &col, true, 1.0, &mut dw[g * m * k..][..m * k]);
            let mut dcol = vec![0.0; k * n];
            gemm(k, m, n, wg, true, dyg, false, 0.0, &mut dcol);
            let dxg = &mut dx[(b * s.c + g * cg) * hw..][..cg * hw];
            let direct = s.size == 1 && s.stride == 1 && s.pad == 0;
            if direct {
                // The backend adds Wᵀ·dy straight into dx (beta 1); do the same.
                let mut acc = dxg.to_vec();
                gemm(k, m, n, wg, true, dyg, false, 1.0, &mut acc);
                dxg.copy_from_slice(&acc);
                continue;
            }
            // Textbook col2im, in (channel, ky, kx, oy, ox) order.
            for &(c, i) in &taps {
                dxg[i] += dcol[c];
            }
        }
    }
    (y, dx, dw)
}

#[test]
fn convolutions_equal_one_gemm_per_image_on_any_thread_count() {
    let shapes = [
        ConvShape::new(5, 3, 9, 7, 4, 3, 2, 1, 1),     // stride 2, padding; small images share GEMMs
        ConvShape::new(2, 6, 40, 36, 10, 3, 1, 1, 1),  // large images: column tiles
        ConvShape::new(17, 24, 7, 7, 40, 1, 1, 0, 1),  // 1×1 direct, 7×7 like yolov4-tiny's head
        ConvShape::new(3, 8, 11, 13, 6, 5, 1, 2, 2),   // 5×5, two groups
        ConvShape::new(4, 300, 6, 6, 20, 3, 1, 1, 1),  // k = 2700: several GEMM depth blocks
        ConvShape::new(2, 16, 34, 34, 280, 1, 1, 0, 1), // 280 filters: dx's GEMM depth > 256; dW in
                                                        // row tiles of ≤ 64×16, depth 1156 > KC
        ConvShape::new(3, 64, 24, 24, 24, 3, 1, 1, 1),  // depth 576 > KC in column tiles
        ConvShape::new(2, 3, 20, 18, 32, 3, 2, 1, 1),   // k = 27 like yolov4-tiny's first layer: dW in
                                                        // column tiles narrower than 16
        ConvShape::new(16, 64, 2, 2, 128, 3, 1, 1, 1),  // 2×2 like yolov4-tiny's deepest layers at 64²:
                                                        // the batch is one column tile, cut in rows
        ConvShape::new(8, 48, 2, 2, 96, 1, 1, 0, 1),    // the same, 1×1 (96 rows: a short last tile)
        // dW of few pixels in registers (cpu/conv_dw.rs; its unit test checks these take it):
        ConvShape::new(4, 7, 3, 1, 34, 3, 1, 1, 1),     // depth 3, 34 rows, columns in 16s and less
        ConvShape::new(5, 40, 4, 4, 36, 1, 1, 0, 1),    // 1×1, 4×4: 36 rows, 40 columns
        ConvShape::new(3, 9, 16, 16, 20, 3, 1, 1, 1),   // depth 256
        // Forward tiles wider than a packed panel of B (conv_blocks.rs: 288 columns at depth
        // 450), four depth blocks; 10 rows: blocks of 8 and 2.
        ConvShape::new(1, 200, 70, 70, 10, 3, 1, 1, 1),
    ];
    for s in shapes {
        let x = random(s.input_len(), 1);
        let w = random(s.weight_len(), 2);
        let dy = random(s.output_len(), 3);
        let dx0 = random(s.input_len(), 4);
        let dw0 = random(s.weight_len(), 5);
        let (y_ref, dx_ref, dw_ref) = per_image(&s, &x, &w, &dy, &dx0, &dw0);
        for threads in [1, 2, 3] {
            let be = CpuBackend::with_threads(threads);
            let (xb, wb, dyb) = (up(&be, &x), up(&be, &w), up(&be, &dy));
            let (yb, dxb, dwb) = (be.alloc(s.output_len()), up(&be, &dx0), up(&be, &dw0));
            be.conv_forward(&xb, &wb, &yb, &s);
            be.conv_backward_data(&dyb, &wb, &dxb, &s);
            be.conv_backward_weights(&xb, &dyb, &dwb, &s);
            assert_eq!(bits(&be.download(&yb)), bits(&y_ref), "forward {s:?}, {threads} threads");
            assert_eq!(bits(&be.download(&dxb)), bits(&dx_ref), "backward data {s:?}, {threads} threads");
            assert_eq!(bits(&be.download(&dwb)), bits(&dw_ref), "backward weights {s:?}, {threads} threads");
        }
    }
}

// ---- fused composite ops against the reference's plain ops -------------------------------------

/// Every output of the four composite ops on `be`.
fn composites(be: &CpuBackend, act: Activation, with_pre: bool, in_place: bool, stats: BnStats, form: BnBackward, store: Store) -> Vec<(String, Vec<f32>)> {
    // 13 channels: one run of channels whose sums the fused kernels interleave, and a shorter one.
    let cs = ChannelShape::new(3, 13, 7);
    let n = cs.len();
    let per = |seed| up(be, &random(cs.channels, seed));
    let x = up(be, &random(n, 10).iter().map(|v| 3.0 * v).collect::<Vec<_>>());
    let y = if in_place { x.clone() } else { be.alloc(n) };
    let pre = with_pre.then(|| be.alloc(n));
    let (x_norm, mean, var, rm, rv) = (be.alloc(n), be.alloc(cs.channels), be.alloc(cs.channels), per(11), per(12));
    let (gamma, beta, dgamma, dbeta) = (per(13), per(14), per(15), per(16));
    let bn = BnTensors { x_norm: &x_norm, mean: &mean, var: &var, rolling_mean: &rm, rolling_var: &rv, gamma: &gamma, beta: &beta, dgamma: &dgamma, dbeta: &dbeta };
    be.batchnorm_activation_forward(&x, &y, pre.as_ref(), &bn, act, &cs, stats, store);
    let delta = up(be, &random(n, 17));
    be.activation_batchnorm_backward(&delta, &y, pre.as_ref(), &bn, act, &cs, form, store);
    let mut out = vec![];
    for (name, buf) in [("y", &y), ("x_norm", &x_norm), ("mean", &mean), ("var", &var), ("rolling_mean", &rm), ("rolling_var", &rv), ("delta", &delta), ("dgamma", &dgamma), ("dbeta", &dbeta)] {
        out.push((format!("bn {name}"), be.download(buf)));
    }
    if let Some(p) = &pre {
        out.push(("bn pre".into(), be.download(p)));
    }

    let s = ConvShape::new(3, 4, 6, 5, 13, 3, 1, 1, 1);
    let ccs = ChannelShape::new(s.batch, s.filters, s.out_h * s.out_w);
    let (cx, w, bias) = (up(be, &random(s.input_len(), 20)), up(be, &random(s.weight_len(), 21)), per(22));
    let cy = be.alloc(s.output_len());
    let cpre = with_pre.then(|| be.alloc(s.output_len()));
    be.conv_bias_activation_forward(&cx, &w, &bias, &cy, cpre.as_ref(), act, &s, store);
    let (cdelta, dbias) = (up(be, &random(s.output_len(), 23)), per(24));
    be.activation_bias_backward(&cdelta, &cy, cpre.as_ref(), &dbias, act, &ccs, store);
    for (name, buf) in [("y", &cy), ("delta", &cdelta), ("dbias", &dbias)] {
        out.push((format!("conv {name}"), be.download(buf)));
    }
    if let Some(p) = &cpre {
        out.push(("conv pre".into(), be.download(p)));
    }
    out
}

#[test]
fn fused_composite_ops_equal_the_plain_reference() {
    let reference = CpuBackend::reference();
    assert!(!reference.fused() && reference.threads() == 1);
    for act in Activation::ALL {
        for with_pre in [false, true] {
            for in_place in [false, true] {
                for (stats, form) in [(BnStats::Accurate, BnBackward::Exact), (BnStats::DarknetCpu, BnBackward::DarknetCpu)] {
                    for store in [Store::F32, Store::F16] {
                        let want = composites(&reference, act, with_pre, in_place, stats, form, store);
                        for threads in [1, 3] {
                            let got = composites(&CpuBackend::with_threads(threads), act, with_pre, in_place, stats, form, store);
                            for ((name, g), (_, w)) in got.iter().zip(&want) {
                                let case = format!("{act:?}, pre {with_pre}, in place {in_place}, {stats:?}/{form:?}, {store:?}, {threads} threads");
                                assert_eq!(bits(g), bits(w), "{name}: {case}");
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---- a whole network ------------------------------------------------------------------------------

/// Losses of three SGD steps of YOLOv4-tiny (3 classes, 64×64, batch 4), then every parameter,
/// its gradient/momentum and every BN statistic.
fn train(be: CpuBackend) -> (Vec<f64>, Vec<Vec<f32>>) {
    let (mut cfg, _) = engine::cfg::load("yolov4-tiny").expect("built-in cfg");
    cfg.set_classes(3).unwrap();
    cfg.set_size(64, 64).unwrap();
    cfg.set_batch(4, 1).unwrap();
    cfg.net.burn_in = 0;
    let net = Network::build(be, cfg, &BuildOptions { seed: 13, ..Default::default() }).unwrap();
    let (images, truths) = engine::bench::random_batch(&net.cfg, net.max_boxes, 13);
    let mut t = Trainer::new(net, Optimizer::Sgd);
    let losses = (0..3).map(|_| t.step(&images, &truths).unwrap().loss).collect();
    let b = &t.net.backend;
    let mut state: Vec<Vec<f32>> = t.net.params().iter().flat_map(|p| [b.download(&p.value), b.download(&p.grad)]).collect();
    state.extend(t.net.state_arenas.iter().map(|a| b.download(a)));
    (losses, state)
}

#[test]
fn training_is_identical_on_1_2_and_3_threads_and_on_the_reference() {
    let (want_loss, want_state) = train(CpuBackend::reference());
    for threads in [1, 2, 3] {
        let (loss, state) = train(CpuBackend::with_threads(threads));
        assert_eq!(loss.iter().map(|l| l.to_bits()).collect::<Vec<_>>(), want_loss.iter().map(|l| l.to_bits()).collect::<Vec<_>>(), "losses on {threads} threads: {loss:?} vs the reference's {want_loss:?}");
        assert_eq!(state.len(), want_state.len());
        for (i, (g, w)) in state.iter().zip(&want_state).enumerate() {
            assert_eq!(bits(g), bits(w), "state tensor {i} on {threads} threads");
        }
    }
}
