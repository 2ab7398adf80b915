//! Activation, pooling, resampling, route, scale_channels and dropout checks.

use super::*;
use engine::shapes::{Activation, ChannelShape, PoolShape, ReorgShape, SliceCopy, UpsampleShape};

// ---- activations --------------------------------------------------------------------------------

#[test]
fn activation_gradients() {
    let n = 60;
    for act in Activation::ALL {
        let name = format!("activation {}", act.darknet_name());
        let mut rng = Rng::new(&name);
        // Stay 0.05 away from the kinks at 0 (relu/leaky/hard_mish) and −2 (hard_mish); include
        // values past mish's softplus threshold on both sides.
        let mut x = rng.vec_away(n, -4.0, 4.0, &[0.0, -2.0], 0.05);
        x.extend([25.0, -25.0, 21.0, -21.0]);
        let len = x.len();
        gradcheck(&name, &[x], &[(0, Over)], 2e-3,
            |be, i| { let y = be.alloc(len); be.activation_forward(&i[0], &y, act); vec![y] },
            |be, i, s, dy, g| be.activation_backward(&i[0], &s[0], dy, &g[0], act));
    }
}

#[test]
fn activation_values_match_formulas() {
    let be = CpuBackend::new();
    let xs = [-3.0f32, -1.0, -0.5, 0.5, 1.0, 3.0];
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let f = |act: Activation, x: f64| -> f64 {
        match act {
            Activation::Linear => x,
            Activation::Logistic => sig(x),
            Activation::Relu => x.max(0.0),
            Activation::Leaky => if x > 0.0 { x } else { 0.1 * x },
            Activation::Tanh => x.tanh(),
            Activation::Mish => x * (x.exp().ln_1p()).tanh(),
            Activation::Swish => x * sig(x),
            Activation::HardMish => if x > 0.0 { x } else if x > -2.0 { x * x / 2.0 + x } else { 0.0 },
        }
    };
    for act in Activation::ALL {
        let bx = upload(&be, &xs);
        be.activation_forward(&bx, &bx, act); // in place is allowed
        let want: Vec<f64> = xs.iter().map(|&x| f(act, x as f64)).collect();
        assert_close(&format!("activation {} values", act.darknet_name()), &be.download(&bx), &want, 1e-6);
    }
}

// ---- pooling / resampling -----------------------------------------------------------------------

fn maxpool_naive(s: &PoolShape, x: &[f32]) -> Vec<f64> {
    let off = (s.padding / 2) as isize;
    let mut y = Vec::new();
    for p in 0..s.batch * s.c {
        for oy in 0..s.out_h {
            for ox in 0..s.out_w {
                let mut best = f64::NEG_INFINITY;
                for ky in 0..s.size {
                    for kx in 0..s.size {
                        let (iy, ix) = ((oy * s.stride + ky) as isize - off, (ox * s.stride + kx) as isize - off);
                        if iy >= 0 && ix >= 0 && iy < s.h as isize && ix < s.w as isize {
                            best = best.max(x[(p * s.h + iy as usize) * s.w + ix as usize] as f64);
                        }
                    }
                }
                y.push(best);
            }
        }
    }
    y
}

#[test]
fn maxpool_gradients_and_forward() {
    let shapes = [
        PoolShape::new(2, 2, 7, 7, 2, 2, 1), // odd 7×7, size 2 stride 2 padding 1 → 4×4
        PoolShape::new(1, 3, 13, 13, 2, 2, 1), // Darknet default padding = size−1 on 13 → 7
        PoolShape::new(2, 2, 5, 5, 2, 1, 1), // yolov3-tiny size 2 stride 1 → same size
        PoolShape::new(1, 2, 7, 6, 3, 2, 2), // size 3 stride 2 (window origin −1)
        PoolShape::new(2, 2, 6, 6, 2, 2, 0), // plain 2×2
    ];
    for s in shapes {
        let name = format!("maxpool {}x{} size{} stride{} pad{} → {}x{}", s.h, s.w, s.size, s.stride, s.padding, s.out_h, s.out_w);
        let mut rng = Rng::new(&name);
        let x = rng.distinct(s.input_len(), 0.05);
        let be = CpuBackend::new();
        let y = be.alloc(s.output_len());
        be.maxpool_forward(&upload(&be, &x), &y, &s);
        assert_close(&format!("{name} y"), &be.download(&y), &maxpool_naive(&s, &x), 0.0);
        gradcheck(&name, &[x], &[(0, Acc)], 1e-3,
            |be, i| { let y = be.alloc(s.output_len()); be.maxpool_forward(&i[0], &y, &s); vec![y] },
            |be, i, _, dy, g| be.maxpool_backward(&i[0], dy, &g[0], &s));
    }
}

#[test]
fn maxpool_first_max_wins_and_padding_never_wins() {
    let be = CpuBackend::new();
    // 2×2 window of equal values: the gradient goes to the first (top-left) one.
    let s = PoolShape::new(1, 1, 2, 2, 2, 2, 0);
    let (x, dx) = (upload(&be, &[3.0; 4]), be.alloc(4));
    be.maxpool_backward(&x, &upload(&be, &[1.5]), &dx, &s);
    assert_eq!(be.download(&dx), vec![1.5, 0.0, 0.0, 0.0]);
    // yolov3-tiny size 2 stride 1 padding 1 on constant negative input: window [j, j+1] reaching
    // past the edge; the out-of-range pixels (−FLT_MAX) never win, so each output's argmax is its
    // own top-left pixel and dx == dy.
    let s = PoolShape::new(1, 1, 3, 3, 2, 1, 1);
    assert_eq!((s.out_h, s.out_w), (3, 3));
    let x = upload(&be, &[-7.0; 9]);
    let y = be.alloc(9);
    be.maxpool_forward(&x, &y, &s);
    assert_eq!(be.download(&y), vec![-7.0; 9]);
    let g: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let dx = be.alloc(9);
    be.maxpool_backward(&x, &upload(&be, &g), &dx, &s);
    assert_eq!(be.download(&dx), g);
}

#[test]
fn avgpool_gradient() {
    let (b, c, sp) = (2, 3, 10);
    let mut rng = Rng::new("avgpool");
    let x = rng.vec(b * c * sp, -1.0, 1.0);
    let want: Vec<f64> = x.chunks(sp).map(|p| p.iter().map(|&v| v as f64).sum::<f64>() / sp as f64).collect();
    let be = CpuBackend::new();
    let y = be.alloc(b * c);
    be.avgpool_forward(&upload(&be, &x), &y, &ChannelShape::new(b, c, sp));
    assert_close("avgpool y", &be.download(&y), &want, 1e-6);
    gradcheck("avgpool", &[x], &[(0, Acc)], 1e-3,
        |be, i| { let y = be.alloc(b * c); be.avgpool_forward(&i[0], &y, &ChannelShape::new(b, c, sp)); vec![y] },
        |be, _, _, dy, g| be.avgpool_backward(dy, &g[0], &ChannelShape::new(b, c, sp)));
}

#[test]
fn upsample_gradient_and_forward() {
    for s in [
        UpsampleShape { batch: 2, c: 3, h: 3, w: 4, stride: 2, scale: 1.0 },
        UpsampleShape { batch: 1, c: 2, h: 2, w: 3, stride: 3, scale: 0.5 },
    ] {
        let name = format!("upsample {}x{} stride{} scale{}", s.h, s.w, s.stride, s.scale);
        let mut rng = Rng::new(&name);
        let x = rng.vec(s.input_len(), -1.0, 1.0);
        let (ow, oh) = (s.w * s.stride, s.h * s.stride);
        let want: Vec<f64> = (0..s.output_len())
            .map(|o| {
                let (ox, oy, p) = (o % ow, (o / ow) % oh, o / (ow * oh));
                s.scale as f64 * x[(p * s.h + oy / s.stride) * s.w + ox / s.stride] as f64
            })
            .collect();
        let be = CpuBackend::new();
        let y = be.alloc(s.output_len());
        be.upsample_forward(&upload(&be, &x), &y, &s);
        assert_close(&format!("{name} y"), &be.download(&y), &want, 0.0);
        gradcheck(&name, &[x], &[(0, Acc)], 1e-3,
            |be, i| { let y = be.alloc(s.output_len()); be.upsample_forward(&i[0], &y, &s); vec![y] },
            |be, _, _, dy, g| be.upsample_backward(dy, &g[0], &s));
    }
}

#[test]
fn reorg_hand_case_inverse_and_gradient() {
    let be = CpuBackend::new();
    // reorg_cpu(forward=0) with w=h=2, c=4, stride 2 (out_c = 1) reads x as one 4×4 plane:
    // y[k][j][i] = x[(2j + k/2)·4 + 2i + k%2] — a space-to-depth with channel k = dy·2 + dx.
    let s = ReorgShape { batch: 1, c: 4, h: 2, w: 2, stride: 2 };
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let y = be.alloc(16);
    be.reorg_forward(&upload(&be, &x), &y, &s);
    let want = [0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15].map(|v| v as f64);
    assert_close("reorg hand case", &be.download(&y), &want, 0.0);

    // Larger shape: backward(forward(x)) == x, i.e. a permutation and its inverse.
    let s = ReorgShape { batch: 2, c: 8, h: 3, w: 2, stride: 2 };
    let mut rng = Rng::new("reorg");
    let x = rng.distinct(s.len(), 1.0);
    let (y, back) = (be.alloc(s.len()), be.alloc(s.len()));
    be.reorg_forward(&upload(&be, &x), &y, &s);
    let mut sorted_y = be.download(&y);
    let mut sorted_x = x.clone();
    sorted_y.sort_by(f32::total_cmp);
    sorted_x.sort_by(f32::total_cmp);
    assert_eq!(sorted_y, sorted_x, "reorg is not a permutation");
    be.reorg_backward(&y, &back, &s);
    assert_eq!(be.download(&back), x);
    gradcheck("reorg b2 c8 3x2 stride2", &[x], &[(0, Acc)], 1e-3,
        |be, i| { let y = be.alloc(s.len()); be.reorg_forward(&i[0], &y, &s); vec![y] },
        |be, _, _, dy, g| be.reorg_backward(dy, &g[0], &s));
}

// ---- route / scale_channels / dropout -----------------------------------------------------------

/// Route slice of one input: channels [group_id·part, +part) of every image, part = c/groups,
/// written at channel `dst_c0` of an output with `out_c` channels.
fn route_copy(batch: usize, c: usize, sp: usize, groups: usize, group_id: usize, out_c: usize, dst_c0: usize) -> SliceCopy {
    let part = c / groups;
    SliceCopy {
        batch,
        len: part * sp,
        src_stride: c * sp,
        src_offset: group_id * part * sp,
        dst_stride: out_c * sp,
        dst_offset: dst_c0 * sp,
        accumulate: false,
    }
}

fn reverse(s: &SliceCopy) -> SliceCopy {
    SliceCopy {
        src_stride: s.dst_stride,
        src_offset: s.dst_offset,
        dst_stride: s.src_stride,
        dst_offset: s.src_offset,
        accumulate: true,
        ..*s
    }
}

#[test]
fn route_groups_takes_second_half() {
    // yolov4-tiny `[route] layers=-1 groups=2 group_id=1` on a 2×4×3 input (batch 2, 4 ch, 3 px).
    let (b, c, sp) = (2, 4, 3);
    let x: Vec<f32> = (0..b * c * sp).map(|v| v as f32).collect();
    let s = route_copy(b, c, sp, 2, 1, 2, 0);
    let be = CpuBackend::new();
    let y = be.alloc(b * 2 * sp);
    be.copy_slices(&upload(&be, &x), &y, &s);
    let want: Vec<f32> = [6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22, 23].map(|v| v as f32).to_vec();
    assert_eq!(be.download(&y), want);
    // Backward accumulates into exactly that slice.
    let dx = upload(&be, &[1.0; 24]);
    be.copy_slices(&y, &dx, &reverse(&s));
    let got = be.download(&dx);
    for (i, &g) in got.iter().enumerate() {
        let in_second_half = (i % (c * sp)) >= 2 * sp;
        assert_eq!(g, if in_second_half { 1.0 + i as f32 } else { 1.0 }, "dx[{i}]");
    }
}

#[test]
fn route_gradient() {
    // Concatenate input A (4 ch, groups 2, group_id 1) and input B (3 ch) → 5 channels.
    let (b, sp) = (2, 6);
    let mut rng = Rng::new("route");
    let (xa, xb) = (rng.vec(b * 4 * sp, -1.0, 1.0), rng.vec(b * 3 * sp, -1.0, 1.0));
    let sa = route_copy(b, 4, sp, 2, 1, 5, 0);
    let sb = route_copy(b, 3, sp, 1, 0, 5, 2);
    gradcheck("route (copy_slices) groups=2 group_id=1 + full input", &[xa, xb], &[(0, Acc), (1, Acc)], 1e-3,
        |be, i| { let y = be.alloc(b * 5 * sp); be.copy_slices(&i[0], &y, &sa); be.copy_slices(&i[1], &y, &sb); vec![y] },
        |be, _, _, dy, g| { be.copy_slices(dy, &g[0], &reverse(&sa)); be.copy_slices(dy, &g[1], &reverse(&sb)); });
}

#[test]
fn scale_channels_gradient() {
    let (b, c, sp) = (2, 3, 7);
    let mut rng = Rng::new("scale_channels");
    let (x, scale) = (rng.vec(b * c * sp, -1.0, 1.0), rng.vec(b * c, -1.0, 1.0));
    gradcheck("scale_channels", &[x, scale], &[(0, Acc), (1, Acc)], 1e-3,
        |be, i| { let y = be.alloc(b * c * sp); be.scale_channels_forward(&i[0], &i[1], &y, &ChannelShape::new(b, c, sp)); vec![y] },
        |be, i, _, dy, g| be.scale_channels_backward(&i[0], &i[1], dy, &g[0], &g[1], &ChannelShape::new(b, c, sp)));
}

#[test]
fn dropout_mask_and_gradient() {
    let (n, p, seed) = (200, 0.3f32, engine::rng::dropout_seed(7, 3, 2));
    let mut rng = Rng::new("dropout");
    let x = rng.vec(n, -1.0, 1.0);
    let be = CpuBackend::new();
    let y = be.alloc(n);
    be.dropout_forward(&upload(&be, &x), &y, p, seed);
    let want: Vec<f64> = (0..n)
        .map(|i| if engine::rng::dropout_keep(seed, i as u32, p) { x[i] as f64 / (1.0 - p as f64) } else { 0.0 })
        .collect();
    assert_close("dropout y", &be.download(&y), &want, 1e-6);
    let dropped = want.iter().filter(|&&v| v == 0.0).count();
    assert!(dropped > 0 && dropped < n, "mask drops {dropped} of {n}");
    gradcheck("dropout p=0.3 (fixed mask)", &[x], &[(0, Acc)], 1e-3,
        |be, i| { let y = be.alloc(n); be.dropout_forward(&i[0], &y, p, seed); vec![y] },
        |be, _, _, dy, g| be.dropout_backward(dy, &g[0], p, seed));
}
