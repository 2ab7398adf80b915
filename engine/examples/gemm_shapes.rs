//! `cargo run --release -p engine --example gemm_shapes -- [size] [batch] [reps] [model]`
//!
//! The CPU conv GEMMs of one training step, single-threaded, through `matrixmultiply` and through
//! the `gemm` crate (issue 13): for every convolution of the model (default yolov4-tiny at
//! 224×224, batch 16) and each of its three GEMM ops, exactly the calls the CPU backend makes
//! (`engine::cpu::gemm_calls`: same tiles, strides and beta), best of `reps` runs per library,
//! GFLOP/s per row and the total. `gemm` runs as the backend calls it (`run_gemm_call`: depth
//! cut into blocks of at most 512 so that tiles sum like the whole); `raw` is one plain `gemm`
//! call with its own blocking, to show what that costs. The first layer has no backward-data (its input is the
//! image). Before timing, each row checks that both libraries agree and that beta = 0 never reads
//! the output (it starts as NaN).

use std::time::Instant;

use engine::cfg::LayerKind;
use engine::cpu::{ConvOp, GemmCall, gemm_calls};
use engine::shapes::ConvShape;

#[derive(Clone, Copy, PartialEq)]
enum Lib {
    MatrixMultiply,
    Gemm,
    GemmRaw,
}

/// Floats a matrix of `rows × cols` with strides (rs, cs) spans.
fn span(rows: usize, cols: usize, (rs, cs): (isize, isize)) -> usize {
    (rows.max(1) - 1) * rs as usize + (cols.max(1) - 1) * cs as usize + 1
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| engine::rng::uniform(seed, i as u32) - 0.5).collect()
}

/// One call of `lib` on the buffers (which `span` sized for it).
fn call(lib: Lib, c: &GemmCall, a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() >= span(c.m, c.k, c.a) && b.len() >= span(c.k, c.n, c.b) && out.len() >= c.m * c.ldc);
    // SAFETY: the three buffers cover the matrices (asserted) and `out` is a unique borrow.
    unsafe {
        match lib {
            Lib::MatrixMultiply => matrixmultiply::sgemm(
                c.m, c.k, c.n, 1.0, a.as_ptr(), c.a.0, c.a.1, b.as_ptr(), c.b.0, c.b.1, c.beta, out.as_mut_ptr(), c.ldc as isize, 1,
            ),
            Lib::Gemm => engine::cpu::run_gemm_call(c, a, b, out),
            // gemm: dst := alpha·dst + beta·lhs·rhs, dst read only when read_dst.
            Lib::GemmRaw => gemm::gemm(
                c.m, c.n, c.k, out.as_mut_ptr(), 1, c.ldc as isize, c.beta != 0.0, a.as_ptr(), c.a.1, c.a.0, b.as_ptr(), c.b.1, c.b.0,
                c.beta, 1.0, false, false, false, gemm::Parallelism::None,
            ),
        }
    }
}

struct Bufs {
    a: Vec<f32>,
    b: Vec<f32>,
    out: Vec<f32>,
}

fn bufs(calls: &[GemmCall]) -> Bufs {
    let a = calls.iter().map(|c| span(c.m, c.k, c.a)).max().unwrap_or(1);
    let b = calls.iter().map(|c| span(c.k, c.n, c.b)).max().unwrap_or(1);
    let o = calls.iter().map(|c| c.m * c.ldc).max().unwrap_or(1);
    Bufs { a: random(a, 1), b: random(b, 2), out: random(o, 3) }
}

/// Largest |difference| between the libraries on the first call, relative to the largest |value|;
/// panics if either left a NaN (beta = 0 read the NaN-filled output).
fn agreement(c: &GemmCall, x: &Bufs) -> f32 {
    let init = if c.beta == 0.0 { f32::NAN } else { 0.25 };
    let run = |lib| {
        let mut out = vec![init; c.m * c.ldc];
        call(lib, c, &x.a, &x.b, &mut out);
        out.truncate((c.m - 1) * c.ldc + c.n);
        out
    };
    let cols = |v: &[f32]| v.chunks(c.ldc).flat_map(|r| r[..c.n.min(r.len())].to_vec()).collect::<Vec<_>>();
    let (p, q, r) = (cols(&run(Lib::MatrixMultiply)), cols(&run(Lib::Gemm)), cols(&run(Lib::GemmRaw)));
    assert!(p.iter().chain(&q).chain(&r).all(|v| v.is_finite()), "a library read the beta = 0 output: {c:?}");
    let scale = p.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    p.iter().zip(&q).fold(0f32, |m, (u, v)| m.max((u - v).abs())) / scale
}

/// Best seconds of `reps` runs of every call in order.
fn time(lib: Lib, calls: &[GemmCall], x: &mut Bufs, reps: usize) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps + 1 {
        let t = Instant::now();
        for c in calls {
            call(lib, c, &x.a, &x.b, &mut x.out);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let arg = |i: usize, default: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (size, batch, reps) = (arg(0, 224), arg(1, 16), arg(2, 3).max(1));
    let model = args.get(3).cloned().unwrap_or_else(|| "yolov4-tiny".into());
    let (mut cfg, _) = engine::cfg::load(&model)?;
    cfg.set_size(size, size)?;
    let shapes = cfg.shapes()?;
    println!("{model} {size}x{size} batch {batch}, single-threaded, best of {reps}; mm = matrixmultiply 0.3, gemm = gemm 0.19");
    println!("{:>3} {:>4} {:>3}x{:<3} {:>4} {:>4} {:>3}  {:>5} {:>6} {:>6} {:>6} {:>5}  {:>8} {:>8} {:>8} {:>7} {:>7} {:>5} {:>8}",
        "L", "c", "hw", "", "f", "sz", "st", "op", "m", "k", "n", "calls", "mm ms", "gemm ms", "raw ms", "mm GF/s", "gemm", "ratio", "rel.diff");
    let mut totals = [0.0f64; 3];
    let mut flops_total = 0.0;
    let mut first = true;
    for (i, (l, sh)) in cfg.layers.iter().zip(&shapes).enumerate() {
        let LayerKind::Convolutional(cv) = &l.kind else { continue };
        let s = ConvShape::new(batch, sh.input.c, sh.input.h, sh.input.w, cv.filters, cv.size, cv.stride, cv.padding, cv.groups);
        for (op, name) in [(ConvOp::Forward, "fwd"), (ConvOp::BackwardData, "bwd-d"), (ConvOp::BackwardWeights, "bwd-w")] {
            if first && op == ConvOp::BackwardData {
                continue;
            }
            let calls = gemm_calls(&s, op);
            let Some(c0) = calls.first() else { continue };
            let mut x = bufs(&calls);
            let diff = agreement(c0, &x);
            let flops: f64 = calls.iter().map(|c| 2.0 * (c.m * c.k * c.n) as f64).sum();
            let tm = time(Lib::MatrixMultiply, &calls, &mut x, reps);
            let tg = time(Lib::Gemm, &calls, &mut x, reps);
            let tr = time(Lib::GemmRaw, &calls, &mut x, reps);
            totals[0] += tm;
            totals[1] += tg;
            totals[2] += tr;
            flops_total += flops;
            println!("{i:>3} {:>4} {:>3}x{:<3} {:>4} {:>4} {:>3}  {name:>5} {:>6} {:>6} {:>6} {:>5}  {:>8.2} {:>8.2} {:>8.2} {:>7.1} {:>7.1} {:>5.2} {diff:>8.1e}",
                s.c, s.h, s.w, s.filters, s.size, s.stride, c0.m, c0.k, c0.n, calls.len(), tm * 1e3, tg * 1e3, tr * 1e3,
                flops / tm / 1e9, flops / tg / 1e9, tm / tg);
        }
        first = false;
    }
    println!("total: matrixmultiply {:.1} ms ({:.1} GFLOP/s), gemm {:.1} ms ({:.1} GFLOP/s), gemm speed-up {:.3}x; raw gemm {:.1} ms; {:.2} GFLOP per step",
        totals[0] * 1e3, flops_total / totals[0] / 1e9, totals[1] * 1e3, flops_total / totals[1] / 1e9, totals[0] / totals[1],
        totals[2] * 1e3, flops_total / 1e9);
    Ok(())
}
