//! Parity of shaders-wgsl/conv_mixed.wgsl, mixed precision's convolution GEMMs on cooperative
//! matrices, against f64 loops and against its CPU twin (engine/src/cpu/conv_mixed.rs: the fp32
//! GEMMs on f16-valued operands). Operands are f16 values, as mixed precision's pass makes them,
//! so every product is exact and only the order of the f32 sums differs: the tolerances are
//! conv.wgsl's (forward rtol 1e-4 / atol 1e-6·K; gradients within 1e-5 of Σ|terms|).
//!
//! Where the adapter has no cooperative matrices (lavapipe), f16 operands run on the fp32
//! kernels; the tests then check that path, and print which one ran.

use std::sync::OnceLock;

use engine::backend::GemmOperands;
use engine::cpu::round_f16;
use engine::gpu::MixedGemm;

use super::conv::{conv_grads_ref, conv_ref};
use super::*;

/// A backend of this module's own: the operand declaration is backend state, and the other
/// parity tests (run in parallel on the shared backend) give fp32 operands.
fn mixed_gpu() -> Option<&'static GpuBackend> {
    static G: OnceLock<Option<GpuBackend>> = OnceLock::new();
    G.get_or_init(|| {
        gpu()?;
        let g = GpuBackend::new(&AdapterSelector::default()).expect("a second device on the adapter the shared one uses");
        g.set_gemm_operands(GemmOperands::F16);
        eprintln!("conv_mixed on {}: {}", g.adapter_info().name, g.gemm_path(GemmOperands::F16));
        Some(g)
    })
    .as_ref()
}

fn half_data(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    data(n, seed, lo, hi).into_iter().map(round_f16).collect()
}

fn mixed_case(g: &GpuBackend, s: ConvShape, seed: u64) {
    let hx = half_data(s.input_len(), seed, -1.0, 1.0);
    let hw = half_data(s.weight_len(), seed + 1, -0.5, 0.5);
    let hdy = half_data(s.output_len(), seed + 2, -1.0, 1.0);
    let (x, w, dy) = (up(g, &hx), up(g, &hw), up(g, &hdy));
    let y = g.alloc(s.output_len());
    g.fill(&y, 7.0); // overwritten, not accumulated
    g.conv_forward(&x, &w, &y, &s);
    let k = (s.c / s.groups * s.size * s.size) as f64;
    let gy = g.download(&y);
    assert_close(&format!("conv_forward (mixed) {s:?}"), &gy, &conv_ref(&hx, &hw, &s), 1e-4, 1e-6 * k);

    let (dx_ref, dxa, dw_ref, dwa) = conv_grads_ref(&hx, &hw, &hdy, &s);
    let dx0 = data(s.input_len(), seed + 3, -1.0, 1.0);
    let dw0 = data(s.weight_len(), seed + 4, -1.0, 1.0);
    let (dx, dw) = (up(g, &dx0), up(g, &dw0));
    g.conv_backward_data(&dy, &w, &dx, &s);
    g.conv_backward_weights(&x, &dy, &dw, &s);
    let dx_want: Vec<f64> = dx_ref.iter().zip(&dx0).map(|(a, &b)| a + b as f64).collect();
    let dw_want: Vec<f64> = dw_ref.iter().zip(&dw0).map(|(a, &b)| a + b as f64).collect();
    let dxa: Vec<f64> = dxa.iter().map(|a| a + 1.0).collect();
    let dwa: Vec<f64> = dwa.iter().map(|a| a + 1.0).collect();
    let (gdx, gdw) = (g.download(&dx), g.download(&dw));
    assert_sum_close(&format!("conv_backward_data (mixed) {s:?}"), &gdx, &dx_want, &dxa);
    assert_sum_close(&format!("conv_backward_weights (mixed) {s:?}"), &gdw, &dw_want, &dwa);

    // The CPU twin on the same operands, declared f16 too (it checks they are).
    let cpu = CpuBackend::new();
    cpu.set_gemm_operands(GemmOperands::F16);
    let cup = |v: &[f32]| {
        let b = cpu.alloc(v.len());
        cpu.upload(&b, v);
        b
    };
    let (cx, cw, cdy) = (cup(&hx), cup(&hw), cup(&hdy));
    let (cy, cdx, cdw) = (cpu.alloc(s.output_len()), cup(&dx0), cup(&dw0));
    cpu.conv_forward(&cx, &cw, &cy, &s);
    cpu.conv_backward_data(&cdy, &cw, &cdx, &s);
    cpu.conv_backward_weights(&cx, &cdy, &cdw, &s);
    assert_close(&format!("conv_forward (mixed) vs cpu {s:?}"), &gy, &f64s(&cpu.download(&cy)), 1e-4, 1e-6 * k);
    assert_sum_close(&format!("conv_backward_data (mixed) vs cpu {s:?}"), &gdx, &f64s(&cpu.download(&cdx)), &dxa);
    assert_sum_close(&format!("conv_backward_weights (mixed) vs cpu {s:?}"), &gdw, &f64s(&cpu.download(&cdw)), &dwa);
}

#[test]
fn conv_mixed_forward_and_backward() {
    let Some(g) = mixed_gpu() else { return };
    // batch, c, h, w, filters, size, stride, pad, groups: every tile height (32, 64, 128 rows),
    // partial tiles in every dimension, 1×1 and 3×3 (specialised) and other sizes, strides
    // with their backward-data phases, groups.
    mixed_case(g, ConvShape::new(2, 3, 7, 5, 5, 3, 1, 1, 1), 110);
    mixed_case(g, ConvShape::new(2, 4, 9, 8, 6, 3, 2, 1, 2), 120);
    mixed_case(g, ConvShape::new(1, 6, 5, 5, 7, 1, 1, 0, 1), 130);
    mixed_case(g, ConvShape::new(1, 4, 6, 6, 4, 3, 1, 1, 4), 140); // depthwise
    mixed_case(g, ConvShape::new(1, 5, 11, 10, 3, 2, 2, 0, 1), 150); // even kernel, no pad
    mixed_case(g, ConvShape::new(1, 17, 9, 9, 70, 3, 1, 1, 1), 160); // 64-row tiles, two of them
    mixed_case(g, ConvShape::new(2, 40, 13, 13, 130, 3, 1, 1, 1), 170); // 128-row tiles, 13² pixels
    mixed_case(g, ConvShape::new(1, 130, 10, 10, 36, 1, 1, 0, 1), 180); // 1×1, K past one tile
}

#[test]
fn conv_mixed_backward_weights_split_k_and_reruns() {
    let Some(g) = mixed_gpu() else { return };
    // A long K (2·40·40 pixels) over one output tile takes the split-K path.
    let s = ConvShape::new(2, 3, 40, 40, 4, 3, 1, 1, 1);
    mixed_case(g, s, 190);
    let x = up(g, &half_data(s.input_len(), 191, -1.0, 1.0));
    let dy = up(g, &half_data(s.output_len(), 192, -1.0, 1.0));
    let w = up(g, &half_data(s.weight_len(), 193, -0.5, 0.5));
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (dw, y) = (g.alloc(s.weight_len()), g.alloc(s.output_len()));
        g.conv_backward_weights(&x, &dy, &dw, &s);
        g.conv_forward(&x, &w, &y, &s);
        runs.push((g.download(&dw), g.download(&y)));
    }
    assert_eq!(runs[0], runs[1], "two identical mixed runs differ");
}

#[test]
fn conv_mixed_says_which_path_runs() {
    let Some(g) = mixed_gpu() else { return };
    let path = g.gemm_path(GemmOperands::F16);
    match g.mixed_gemm() {
        MixedGemm::Coop16 => assert!(path.contains("cooperative matrices"), "{path}"),
        MixedGemm::Fp32 { reason } => assert!(path.contains("fp32") && path.contains(reason.as_str()), "{path}"),
    }
    assert_eq!(g.gemm_path(GemmOperands::F32), "fp32 kernels (conv.wgsl)");
}
