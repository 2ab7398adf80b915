//! Convolution backward passes on the GPU against the CPU on the exact shapes of yolov4-tiny's
//! first block at 64×64 (batch 2), where small weight tensors meet many pixels.

use engine::cpu::CpuBackend;
use engine::shapes::ConvShape;
use engine::Backend;
use rand::{Rng, SeedableRng};

mod common;
use common::{gpu_or_skip, rel_norm_diff as rel};

#[test]
fn conv_backward_on_yolov4_tiny_block_shapes() {
    let Some(g) = gpu_or_skip() else { return };
    let c = CpuBackend::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let shapes = [
        ConvShape::new(2, 3, 64, 64, 32, 3, 2, 1, 1),
        ConvShape::new(2, 32, 32, 32, 64, 3, 2, 1, 1),
        ConvShape::new(2, 64, 16, 16, 64, 3, 1, 1, 1),
        ConvShape::new(2, 32, 16, 16, 32, 3, 1, 1, 1),
        ConvShape::new(2, 64, 16, 16, 64, 1, 1, 0, 1),
        ConvShape::new(2, 128, 8, 8, 128, 3, 1, 1, 1),
    ];
    let mut failures = Vec::new();
    for s in shapes {
        let x: Vec<f32> = (0..s.input_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..s.weight_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let dy: Vec<f32> = (0..s.output_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (cx, cw, cdy, cdw, cdx) = (c.alloc(x.len()), c.alloc(w.len()), c.alloc(dy.len()), c.alloc(w.len()), c.alloc(x.len()));
        let (gx, gw, gdy, gdw, gdx) = (g.alloc(x.len()), g.alloc(w.len()), g.alloc(dy.len()), g.alloc(w.len()), g.alloc(x.len()));
        c.upload(&cx, &x); c.upload(&cw, &w); c.upload(&cdy, &dy);
        g.upload(&gx, &x); g.upload(&gw, &w); g.upload(&gdy, &dy);
        c.conv_backward_weights(&cx, &cdy, &cdw, &s);
        g.conv_backward_weights(&gx, &gdy, &gdw, &s);
        c.conv_backward_data(&cdy, &cw, &cdx, &s);
        g.conv_backward_data(&gdy, &gw, &gdx, &s);
        let (rw, rd) = (rel(&c.download(&cdw), &g.download(&gdw)), rel(&c.download(&cdx), &g.download(&gdx)));
        println!("{s:?}: dW rel {rw:.2e}, dX rel {rd:.2e}");
        if rw > 1e-5 || rd > 1e-5 {
            failures.push(format!("{s:?}: dW {rw:.2e} dX {rd:.2e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn batchnorm_backward_in_place_on_block_shapes() {
    let Some(g) = gpu_or_skip() else { return };
    let c = CpuBackend::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let mut failures = Vec::new();
    for (batch, ch, spatial) in [(2, 64, 256), (2, 32, 1024), (2, 128, 64), (2, 64, 1024), (3, 5, 333)] {
        let n = batch * ch * spatial;
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        let dy: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let gamma: Vec<f32> = (0..ch).map(|_| rng.random_range(0.5..1.5)).collect();
        let run = |b: &dyn Fn(&[f32], &[f32], &[f32]) -> Vec<f32>| b(&x, &dy, &gamma);
        let on_cpu = |x: &[f32], dy: &[f32], gm: &[f32]| bn(&c, x, dy, gm, batch, ch, spatial);
        let on_gpu = |x: &[f32], dy: &[f32], gm: &[f32]| bn(&g, x, dy, gm, batch, ch, spatial);
        let (a, b) = (run(&on_cpu), run(&on_gpu));
        let r = rel(&a, &b);
        println!("batch {batch} channels {ch} spatial {spatial}: dx (in place) rel {r:.2e}");
        if r > 1e-5 {
            failures.push(format!("{batch}x{ch}x{spatial}: {r:.2e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Every forward / backward-data tile gives the same bits as the widest one (each output sums K in
/// one order whatever the tile), on the few-column GEMMs of yolov4-tiny's deep layers at 64×64
/// (where CPU adapters take the narrow tiles) and on a stride-2 and a ragged shape; so does every
/// backward-weights tile where K is too short to be split (batch × pixel tiles < 16 for the
/// shortest K tile, 4: CPU adapters then walk K 4 pixels at a time). The first tile's result is
/// checked against the CPU, so the bits compared are a convolution's.
#[test]
fn conv_tiles_agree_bit_for_bit_on_small_shapes() {
    use engine::gpu::GemmKind;
    let Some(g) = gpu_or_skip() else { return };
    let c = CpuBackend::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    // (shape, whether every backward-weights tile runs it as one split)
    let shapes = [
        (ConvShape::new(4, 512, 2, 2, 512, 3, 1, 1, 1), true),
        (ConvShape::new(4, 256, 2, 2, 128, 1, 1, 0, 1), true),
        (ConvShape::new(4, 128, 4, 4, 128, 3, 1, 1, 1), false),
        (ConvShape::new(2, 32, 8, 8, 64, 3, 2, 1, 1), true),
        (ConvShape::new(3, 24, 5, 5, 40, 3, 1, 1, 1), false),
    ];
    let mut failures = Vec::new();
    for (s, one_split) in shapes {
        let x: Vec<f32> = (0..s.input_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..s.weight_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let dy: Vec<f32> = (0..s.output_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (gx, gw, gdy) = (g.alloc(x.len()), g.alloc(w.len()), g.alloc(dy.len()));
        g.upload(&gx, &x);
        g.upload(&gw, &w);
        g.upload(&gdy, &dy);
        let kinds: &[GemmKind] = if one_split { &GemmKind::ALL } else { &[GemmKind::Forward, GemmKind::BackwardData] };
        for &kind in kinds {
            let len = match kind {
                GemmKind::Forward => s.output_len(),
                GemmKind::BackwardData => s.input_len(),
                GemmKind::BackwardWeights => s.weight_len(),
            };
            let run = |tile| {
                g.force_gemm_tile(kind, tile);
                let out = g.alloc(len);
                match kind {
                    GemmKind::Forward => g.conv_forward(&gx, &gw, &out, &s),
                    GemmKind::BackwardData => g.conv_backward_data(&gdy, &gw, &out, &s),
                    GemmKind::BackwardWeights => g.conv_backward_weights(&gx, &gdy, &out, &s),
                }
                g.force_gemm_tile(kind, None);
                g.download(&out)
            };
            let tiles = kind.candidates();
            let first = run(Some(tiles[0]));
            let cpu = {
                let (cx, cw, cdy) = (c.alloc(x.len()), c.alloc(w.len()), c.alloc(dy.len()));
                c.upload(&cx, &x);
                c.upload(&cw, &w);
                c.upload(&cdy, &dy);
                let out = c.alloc(len);
                match kind {
                    GemmKind::Forward => c.conv_forward(&cx, &cw, &out, &s),
                    GemmKind::BackwardData => c.conv_backward_data(&cdy, &cw, &out, &s),
                    GemmKind::BackwardWeights => c.conv_backward_weights(&cx, &cdy, &out, &s),
                }
                c.download(&out)
            };
            if rel(&cpu, &first) > 1e-5 {
                failures.push(format!("{s:?} {kind:?} {}: {:.2e} from the CPU", tiles[0], rel(&cpu, &first)));
            }
            for &t in &tiles[1..] {
                let got = run(Some(t));
                let same = got.iter().zip(&first).all(|(a, b)| a.to_bits() == b.to_bits());
                if !same {
                    failures.push(format!("{s:?} {kind:?}: tile {t} differs from {}", tiles[0]));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Where the adapter gives the conv GEMMs subgroup lanes (CPU adapters such as lavapipe), every
/// tile of every GEMM gives the same bits with them as without (the products and their order are
/// the same; only how the rows of A reach the lanes differs), on the shapes above. The lanes are
/// checked to be on, so on lavapipe this compares two different kernels.
#[test]
fn subgroup_lanes_give_the_plain_kernels_bits() {
    use engine::gpu::{AdapterSelector, GemmKind, GpuBackend};
    let Some(probe) = gpu_or_skip() else { return };
    if probe.subgroup_lanes() == 0 {
        println!("skipping: {} gives the conv GEMMs no subgroup lanes", probe.adapter_info());
        return;
    }
    drop(probe);
    let make = |lanes| GpuBackend::new(&AdapterSelector { lanes: Some(lanes), ..Default::default() }).expect("a GPU backend");
    let (on, off) = (make(true), make(false));
    assert!(on.subgroup_lanes() > 0 && off.subgroup_lanes() == 0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let shapes = [
        ConvShape::new(4, 512, 2, 2, 512, 3, 1, 1, 1),
        ConvShape::new(4, 256, 4, 4, 256, 3, 1, 1, 1),
        ConvShape::new(4, 128, 8, 8, 128, 3, 1, 1, 1),
        ConvShape::new(2, 32, 8, 8, 64, 3, 2, 1, 1),
        ConvShape::new(3, 24, 5, 5, 40, 1, 1, 0, 1),
    ];
    let mut failures = Vec::new();
    let mut compared = 0;
    for s in shapes {
        let x: Vec<f32> = (0..s.input_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..s.weight_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let dy: Vec<f32> = (0..s.output_len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        for kind in GemmKind::ALL {
            // The rule's tile (None) and every candidate.
            let tiles: Vec<_> = std::iter::once(None).chain(kind.candidates().into_iter().map(Some)).collect();
            for tile in tiles {
                let run = |g: &GpuBackend| {
                    let (gx, gw, gdy) = (g.alloc(x.len()), g.alloc(w.len()), g.alloc(dy.len()));
                    g.upload(&gx, &x);
                    g.upload(&gw, &w);
                    g.upload(&gdy, &dy);
                    g.force_gemm_tile(kind, tile);
                    let out = match kind {
                        GemmKind::Forward => {
                            let y = g.alloc(s.output_len());
                            g.conv_forward(&gx, &gw, &y, &s);
                            y
                        }
                        GemmKind::BackwardData => {
                            let dx = g.alloc(s.input_len());
                            g.conv_backward_data(&gdy, &gw, &dx, &s);
                            dx
                        }
                        GemmKind::BackwardWeights => {
                            let dw = g.alloc(s.weight_len());
                            g.conv_backward_weights(&gx, &gdy, &dw, &s);
                            dw
                        }
                    };
                    g.force_gemm_tile(kind, None);
                    g.download(&out)
                };
                let (a, b) = (run(&on), run(&off));
                compared += 1;
                if !a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()) {
                    let name = tile.map_or("the rule's tile".to_string(), |t| t.to_string());
                    failures.push(format!("{s:?} {kind:?} {name}: {:.2e} apart", rel(&b, &a)));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    println!("{compared} GEMMs the same bit for bit with and without subgroup lanes");
}

/// Training forward then in-place backward (dx aliases dy, as the network calls it).
fn bn<B: Backend>(b: &B, x: &[f32], dy: &[f32], gamma: &[f32], batch: usize, ch: usize, spatial: usize) -> Vec<f32> {
    let n = x.len();
    let (bx, by, xn) = (b.alloc(n), b.alloc(n), b.alloc(n));
    let (mean, var, rm, rv, g, beta, dg, dbeta) = (b.alloc(ch), b.alloc(ch), b.alloc(ch), b.alloc(ch), b.alloc(ch), b.alloc(ch), b.alloc(ch), b.alloc(ch));
    b.upload(&bx, x);
    b.upload(&g, gamma);
    b.batchnorm_forward_train(&bx, &by, &xn, &mean, &var, &rm, &rv, &g, &beta, batch, ch, spatial, engine::shapes::BnStats::Accurate);
    let d = b.alloc(n);
    b.upload(&d, dy);
    b.batchnorm_backward(&d, &xn, &var, &g, &dg, &dbeta, &d, batch, ch, spatial, engine::shapes::BnBackward::Exact);
    b.download(&d)
}
