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

use super::conv::{ConvRun, check_conv};
use super::*;

/// A backend of this module's own: the operand declaration is backend state, and the other
/// parity tests (run in parallel on the shared backend) give fp32 operands.
fn mixed_gpu() -> Option<&'static GpuBackend> {
    static G: OnceLock<Option<GpuBackend>> = OnceLock::new();
    G.get_or_init(|| mixed_backend(false)).as_ref()
}

/// Another such backend with conv_mixed.wgsl's direct write-out on (off by default).
fn direct_gpu() -> Option<&'static GpuBackend> {
    static G: OnceLock<Option<GpuBackend>> = OnceLock::new();
    G.get_or_init(|| mixed_backend(true)).as_ref()
}

/// Another with the column path on (the forward and backward weights read an f16 im2col
/// matrix, the forward f16 weights), and one whose binding limit (32 KiB) leaves room for one
/// image's matrix at a time in the shape below, so the batch is done a range of images at a time.
fn col_gpu() -> Option<&'static GpuBackend> {
    static G: OnceLock<Option<GpuBackend>> = OnceLock::new();
    G.get_or_init(|| mixed_backend_with(&AdapterSelector::default(), false, true)).as_ref()
}

fn col_ranges_gpu() -> Option<&'static GpuBackend> {
    static G: OnceLock<Option<GpuBackend>> = OnceLock::new();
    let small = AdapterSelector { max_binding_bytes: Some(32 << 10), ..Default::default() };
    G.get_or_init(|| mixed_backend_with(&small, false, true)).as_ref()
}

fn mixed_backend(direct: bool) -> Option<GpuBackend> {
    mixed_backend_with(&AdapterSelector::default(), direct, false)
}

fn mixed_backend_with(selector: &AdapterSelector, direct: bool, col: bool) -> Option<GpuBackend> {
    gpu()?;
    let g = GpuBackend::new(selector).expect("another device on the adapter the shared one uses");
    g.set_gemm_operands(GemmOperands::F16);
    g.set_coop_direct(direct);
    g.set_coop_col(col);
    let name = &g.adapter_info().name;
    eprintln!("conv_mixed on {name} (direct write-out {direct}, column path {col}): {}", g.gemm_path(GemmOperands::F16));
    Some(g)
}

fn mixed_case(g: &GpuBackend, s: ConvShape, seed: u64) {
    let ConvRun { hx, hw, hdy, dx0, dw0, y: gy, dx: gdx, dw: gdw, k, dxa, dwa } = check_conv(g, s, seed, " (mixed)", round_f16);

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

/// batch, c, h, w, filters, size, stride, pad, groups: every tile height (32, 64, 128 rows),
/// partial tiles in every dimension, 1×1 and 3×3 (specialised) and other sizes, strides with
/// their backward-data phases, groups.
fn shapes() -> [ConvShape; 8] {
    [
        ConvShape::new(2, 3, 7, 5, 5, 3, 1, 1, 1),
        ConvShape::new(2, 4, 9, 8, 6, 3, 2, 1, 2),
        ConvShape::new(1, 6, 5, 5, 7, 1, 1, 0, 1),
        ConvShape::new(1, 4, 6, 6, 4, 3, 1, 1, 4),      // depthwise
        ConvShape::new(1, 5, 11, 10, 3, 2, 2, 0, 1),    // even kernel, no pad
        ConvShape::new(1, 17, 9, 9, 70, 3, 1, 1, 1),    // 64-row tiles, two of them
        ConvShape::new(2, 40, 13, 13, 130, 3, 1, 1, 1), // 128-row tiles, 13² pixels
        ConvShape::new(1, 130, 10, 10, 36, 1, 1, 0, 1), // 1×1, K past one tile
    ]
}

#[test]
fn conv_mixed_forward_and_backward() {
    let Some(g) = mixed_gpu() else { return };
    for (i, s) in shapes().into_iter().enumerate() {
        mixed_case(g, s, 110 + 10 * i as u64);
    }
    // Planes of a multiple of 4 pixels, with the direct write-out on and off: whole tiles then
    // take it (fragments loaded from and stored to y, dx, dw or the split-K partials), the tiles
    // at an image's or the matrix's edge the staged one, in one dispatch.
    let direct = direct_gpu().expect("made where mixed_gpu is");
    for g in [g, direct] {
        mixed_case(g, ConvShape::new(2, 32, 16, 16, 64, 3, 1, 1, 1), 200);
        mixed_case(g, ConvShape::new(1, 64, 12, 12, 128, 1, 1, 0, 1), 210);
    }
}

/// The column path against the same references: every shape of the test above (grouped ones
/// keep the gather), pixels per image that are and are not multiples of 16, K past one tile;
/// then a batch done one image's matrix at a time (the split-K partials of each range summed in
/// order), with the direct write-out on where whole tiles allow it.
#[test]
fn conv_mixed_column_path() {
    let Some(g) = col_gpu() else { return };
    for (i, s) in shapes().into_iter().enumerate() {
        mixed_case(g, s, 310 + 10 * i as u64);
    }
    mixed_case(g, ConvShape::new(2, 32, 16, 16, 64, 3, 1, 1, 1), 390);
    mixed_case(g, ConvShape::new(2, 3, 40, 40, 4, 3, 1, 1, 1), 395); // split K
    let chunked = col_ranges_gpu().expect("made where col_gpu is");
    // Packed weights of 128 × 48 f16 (12 KiB), then 48 rows × 112 columns per image (10.5
    // KiB): one image per matrix in the 32 KiB binding.
    mixed_case(chunked, ConvShape::new(3, 4, 10, 10, 8, 3, 1, 1, 1), 396);
    chunked.set_coop_direct(true);
    mixed_case(chunked, ConvShape::new(3, 8, 16, 16, 16, 1, 1, 0, 1), 397);
}

#[test]
fn conv_mixed_backward_weights_split_k_and_reruns() {
    let Some(g) = mixed_gpu() else { return };
    // A long K (2·40·40 pixels) over one output tile takes the split-K path.
    let s = ConvShape::new(2, 3, 40, 40, 4, 3, 1, 1, 1);
    mixed_case(g, s, 190);
    let half = |n, seed, lo, hi| data(n, seed, lo, hi).into_iter().map(round_f16).collect::<Vec<f32>>();
    let x = up(g, &half(s.input_len(), 191, -1.0, 1.0));
    let dy = up(g, &half(s.output_len(), 192, -1.0, 1.0));
    let w = up(g, &half(s.weight_len(), 193, -0.5, 0.5));
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
        MixedGemm::Coop16 { .. } => assert!(path.contains("cooperative matrices"), "{path}"),
        MixedGemm::Fp32 { reason } => assert!(path.contains("fp32") && path.contains(reason.as_str()), "{path}"),
    }
    let fp32 = g.gemm_path(GemmOperands::F32);
    assert!(fp32.starts_with("fp32 kernels (conv.wgsl)"), "{fp32}");
    // CPU adapters with subgroups say the rows of A go through them.
    assert_eq!(fp32.contains("subgroups of"), g.subgroup_lanes() > 0, "{fp32}");
}
