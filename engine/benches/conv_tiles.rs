//! `cargo bench -p engine --bench conv_tiles -- [size] [batch] [model]`
//!
//! The tile sweep behind the GEMM tile rule of `engine/src/gpu/conv.rs`: for every distinct
//! convolution of the model (default yolov4-tiny at 416×416, batch 64) and each of its three GEMMs,
//! times every candidate tile with GPU timestamps (median of 3 runs after a warm-up) and prints
//! milliseconds and GFLOP/s per tile, the rule's choice marked `*` and the fastest `<`.

use engine::Backend;
use engine::cfg::LayerKind;
use engine::gpu::{AdapterSelector, GemmKind, GemmTile, GpuBackend, GpuBuf};
use engine::rng::uniform;
use engine::shapes::ConvShape;

const RUNS: usize = 3;

fn random(g: &GpuBackend, n: usize, seed: u64) -> GpuBuf {
    let b = g.alloc(n);
    let v: Vec<f32> = (0..n).map(|i| uniform(seed, i as u32) - 0.5).collect();
    g.upload(&b, &v);
    b
}

/// Device seconds of each of `RUNS` runs of `kind` (the split-K reduce counts with its GEMM).
fn time(g: &GpuBackend, kind: GemmKind, s: &ConvShape, bufs: &[GpuBuf; 6], probe: &GpuBuf) -> Vec<f64> {
    let [x, w, y, dy, dx, dw] = bufs;
    let _ = g.take_timings();
    for _ in 0..RUNS + 1 {
        match kind {
            GemmKind::Forward => g.conv_forward(x, w, y, s),
            GemmKind::BackwardData => g.conv_backward_data(dy, w, dx, s),
            GemmKind::BackwardWeights => g.conv_backward_weights(x, dy, dw, s),
        }
    }
    g.download(probe);
    let times = g.take_timings().unwrap_or_default();
    let conv: Vec<f64> = times.iter().filter(|t| t.kernel.starts_with("conv_")).map(|t| t.seconds).collect();
    // One or two launches per run (split-K adds the reduce); the first run compiled pipelines.
    let per_run = conv.len() / (RUNS + 1);
    conv.chunks(per_run.max(1)).skip(1).map(|c| c.iter().sum()).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let size: usize = args.first().and_then(|v| v.parse().ok()).unwrap_or(416);
    let batch: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(64);
    let model = args.get(2).cloned().unwrap_or_else(|| "yolov4-tiny".into());
    let (mut cfg, _) = engine::cfg::load(&model).expect("model cfg");
    cfg.set_size(size, size).expect("size");
    let shapes = cfg.shapes().expect("shapes");
    let mut convs: Vec<ConvShape> = Vec::new();
    for (l, sh) in cfg.layers.iter().zip(&shapes) {
        if let LayerKind::Convolutional(c) = &l.kind {
            let s = ConvShape::new(batch, sh.input.c, sh.input.h, sh.input.w, c.filters, c.size, c.stride, c.padding, c.groups);
            if !convs.contains(&s) {
                convs.push(s);
            }
        }
    }
    let g = GpuBackend::new(&AdapterSelector::default()).expect("GPU adapter");
    assert!(g.timing(), "the tile sweep needs timestamp queries");
    println!("# {} — {model} {size}x{size} batch {batch}", g.adapter_info());
    let probe = g.alloc(1);
    let mut rule_total = 0.0;
    let mut best_total = 0.0;
    for s in &convs {
        let bufs = [
            random(&g, s.input_len(), 1),
            random(&g, s.weight_len(), 2),
            g.alloc(s.output_len()),
            random(&g, s.output_len(), 3),
            g.alloc(s.input_len()),
            g.alloc(s.weight_len()),
        ];
        let flops = 2.0 * (s.batch * s.out_h * s.out_w * s.filters * s.c / s.groups * s.size * s.size) as f64;
        println!("\n{}x{}x{} -> {} filters, {}x{} stride {} ({:.1} GFLOP per GEMM)", s.c, s.h, s.w, s.filters, s.size, s.size, s.stride, flops / 1e9);
        for kind in GemmKind::ALL {
            g.force_gemm_tile(kind, None);
            let rule = median(time(&g, kind, s, &bufs, &probe));
            let mut rows: Vec<(GemmTile, f64)> = Vec::new();
            for t in kind.candidates() {
                g.force_gemm_tile(kind, Some(t));
                rows.push((t, median(time(&g, kind, s, &bufs, &probe))));
            }
            g.force_gemm_tile(kind, None);
            let best = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
            rule_total += rule;
            best_total += best;
            let line: Vec<String> = rows
                .iter()
                .map(|(t, sec)| {
                    let mark = if (*sec - best).abs() < 1e-12 { "<" } else { " " };
                    format!("{t} {:.3}ms {:.0}GF{mark}", sec * 1e3, flops / sec / 1e9)
                })
                .collect();
            println!("  {kind:?}: rule {:.3} ms ({:.0} GFLOP/s) | {}", rule * 1e3, flops / rule / 1e9, line.join(" | "));
        }
    }
    println!("\nall GEMMs once: rule {:.2} ms, best per shape {:.2} ms", rule_total * 1e3, best_total * 1e3);
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
