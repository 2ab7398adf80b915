//! Unit tests of cpu/conv.rs (tap ranges, GEMM splits, grouped forward, GEMM call counts), kept apart so that the kernel file fits in a head.

use super::*;

/// The valid output range of a tap is exactly the outputs whose input index is in the image.
#[test]
fn valid_range_matches_the_index_formula() {
    for (out, limit, stride, pad, size) in [(5usize, 5usize, 1usize, 1usize, 3usize), (3, 6, 2, 1, 3), (2, 4, 2, 0, 2), (4, 4, 1, 0, 1), (1, 1, 1, 2, 5)] {
        for kk in 0..size {
            let want: Vec<usize> =
                (0..out).filter(|&o| (o * stride + kk).checked_sub(pad).is_some_and(|i| i < limit)).collect();
            let got: Vec<usize> = valid_range(out, kk, stride, pad, limit).collect();
            assert_eq!(got, want, "out {out} limit {limit} stride {stride} pad {pad} tap {kk}");
        }
    }
}

/// The tap-table im2col of few positions writes the same floats as the one by valid ranges,
/// padding zeros included, for whole images and for pieces of one, at any row offset.
#[test]
fn gathered_im2col_equals_the_ranges() {
    for s in [ConvShape::new(1, 5, 2, 2, 1, 3, 1, 1, 1), ConvShape::new(1, 3, 4, 4, 1, 3, 1, 1, 1), ConvShape::new(1, 2, 7, 5, 1, 3, 2, 1, 1),
        ConvShape::new(1, 2, 3, 3, 1, 1, 1, 0, 1), ConvShape::new(1, 4, 2, 3, 1, 2, 1, 0, 1)] {
        let (k, n, hw) = (s.c * s.size * s.size, s.out_h * s.out_w, s.h * s.w);
        assert!(s.size * s.size * n <= GATHER_TABLE, "{s:?} must fit the table");
        let x: Vec<f32> = (0..s.c * hw).map(|i| i as f32 + 1.0).collect();
        let planes = |ch: usize| &x[ch * hw..][..hw];
        for (rows, pos) in [(0..k, 0..n), (1..k - 1, 0..n), (s.size * s.size..k, n / 2..n), (k - 1..k, 0..1)] {
            let (ld, c0) = (n + 3, 2);
            let (mut a, mut b) = (vec![f32::NAN; rows.len() * ld], vec![f32::NAN; rows.len() * ld]);
            im2col_gathered(planes, &s, rows.clone(), pos.clone(), &mut a, ld, c0);
            im2col_ranges(planes, &s, rows.clone(), pos.clone(), &mut b, ld, c0);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{s:?} rows {rows:?} positions {pos:?}");
        }
    }
}

/// The shapes `tests/cpu_backend.rs` checks the few-pixel weight gradient on (against one `gemm`
/// call per image) do take that path, in tiles with and without whole 32-column and 4-row blocks.
#[test]
fn few_pixel_weight_gradients_take_their_path() {
    if !par::has_wide() {
        return; // gemm runs them: nothing to check
    }
    for s in [ConvShape::new(4, 7, 3, 1, 34, 3, 1, 1, 1), ConvShape::new(5, 40, 4, 4, 36, 1, 1, 0, 1),
        ConvShape::new(3, 9, 16, 16, 20, 3, 1, 1, 1), ConvShape::new(16, 64, 2, 2, 128, 3, 1, 1, 1)] {
        let g = geo(&s);
        let plan = backward_weights_plan(&g);
        assert!(plan.iter().all(|t| dw::applies(&s, &g, t)), "{s:?}: {plan:?}");
    }
    let ragged = |s: ConvShape| backward_weights_plan(&geo(&s)).iter().any(|t| t.rows.len() % 4 != 0 && t.cols.len() % 16 != 0);
    assert!(ragged(ConvShape::new(4, 7, 3, 1, 34, 3, 1, 1, 1)), "the first shape must leave row and column tails");
    // Depth 2 stays with gemm, which takes another kernel there.
    let two = ConvShape::new(4, 8, 2, 1, 40, 1, 1, 0, 1);
    assert!(!backward_weights_plan(&geo(&two)).iter().any(|t| dw::applies(&two, &geo(&two), t)));
}

#[test]
fn splits_cover_the_range_at_aligned_cuts() {
    for len in [1, 7, 49, 256, 784, 3136, 12544] {
        for (pieces, align) in [(1, 1), (3, 8), (16, 8), (5, 9), (40, 1)] {
            let t = split(len, pieces, align);
            assert!(t.len() <= pieces && t[0].start == 0 && t.last().unwrap().end == len, "{len}: {t:?}");
            assert!(t.windows(2).all(|p| p[0].end == p[1].start && p[0].end % align == 0 && !p[0].is_empty()), "{len}: {t:?}");
        }
    }
}

/// A GEMM cut into several tiles has more than SMALL_GEMM outputs and 2 rows and columns in
/// every tile, so each tile takes the whole GEMM's kernel.
#[test]
fn gemm_splits_are_never_small_gemms() {
    for len in [1, 2, 3, 16, 17, 33, 49, 64, 255, 280, 512, 1568, 4608] {
        for other in [1, 2, 8, 16, 27, 49, 256, 577] {
            for (unit, want, min, align) in [(1, 16, 1, 1), (9, 16, 4, 1), (1, 8, 16, 8), (1, 100, 1, 8)] {
                let t = gemm_split(len, unit, other, want, min, align);
                assert!(t.len() <= want.max(1) && t.last().unwrap().end == len);
                assert!(t.len() == 1 || t.iter().all(|r| r.len() * unit * other > SMALL_GEMM && r.len() * unit >= 2 && r.len() >= min),
                    "{len}×{unit} by {other}: {t:?}");
            }
        }
    }
}

/// Images that share a GEMM give the same floats as one GEMM per image (the forward's
/// promise), on a shape with padding and stride 2.
#[test]
fn grouped_forward_equals_per_image_forward() {
    let s = ConvShape::new(5, 3, 9, 7, 4, 3, 2, 1, 1);
    assert!(geo(&s).group > 1, "the shape must exercise grouping");
    let u = |i: usize, seed: u64| crate::rng::uniform(seed, i as u32) - 0.5;
    let x: Vec<f32> = (0..s.input_len()).map(|i| u(i, 1)).collect();
    let w: Vec<f32> = (0..s.weight_len()).map(|i| u(i, 2)).collect();
    let par = Par::new(2);
    let mut y = vec![0.0; s.output_len()];
    let mut col = vec![0.0; 2 * col_len(&s)];
    forward(&par, &x, &w, &mut y, &s, &mut col);
    let one = ConvShape { batch: 1, ..s };
    for b in 0..s.batch {
        let mut yb = vec![0.0; one.output_len()];
        let mut col = vec![0.0; col_len(&one)];
        forward(&Par::new(1), &x[b * one.input_len()..][..one.input_len()], &w, &mut yb, &one, &mut col);
        assert_eq!(&y[b * one.output_len()..][..one.output_len()], &yb[..], "image {b}");
    }
}

/// The listed GEMM calls do exactly the multiply-adds of the three ops.
#[test]
fn gemm_calls_add_up_to_the_ops() {
    for s in [ConvShape::new(16, 3, 224, 224, 32, 3, 2, 1, 1), ConvShape::new(16, 256, 7, 7, 512, 3, 1, 1, 1),
        ConvShape::new(16, 64, 56, 56, 64, 1, 1, 0, 1), ConvShape::new(3, 8, 11, 13, 6, 5, 1, 2, 2)] {
        let g = geo(&s);
        let want = s.batch * s.groups * g.m * g.k * g.n;
        for op in [ConvOp::Forward, ConvOp::BackwardData, ConvOp::BackwardWeights] {
            let got: usize = gemm_calls(&s, op).iter().map(|c| c.m * c.k * c.n).sum();
            assert_eq!(got, want, "{s:?} {op:?}");
        }
    }
}
