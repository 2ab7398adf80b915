//! The conv ops' GEMM calls as data (cpu/conv.rs): what each op multiplies, for benchmarks of the
//! GEMM alone (`examples/gemm_shapes.rs`) and as the untiled GEMM the tests compare the tiled
//! ops against. A child of `conv` so that it reads the ops' own plans.

use super::*;

/// One single-threaded GEMM call the conv ops make: `C (m×n, row stride ldc) = A·B + beta·C`,
/// element (r, c) of A at `r·a.0 + c·a.1` (B likewise). For benchmarks of the GEMM alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmCall {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: (isize, isize),
    pub b: (isize, isize),
    pub beta: f32,
    pub ldc: usize,
}

/// Runs `call` as the backend does ([`sgemm`]) on `c`, with A and B at the start of `a` and `b`.
/// For benchmarks, and as the untiled GEMM the tests compare the tiled ops against.
pub fn run_gemm_call(call: &GemmCall, a: &[f32], b: &[f32], c: &mut [f32]) {
    let GemmCall { m, k, n, beta, ldc, .. } = *call;
    let fits = |v: &[f32], rows: usize, cols: usize, (rs, cs): (isize, isize)| {
        rs >= 0 && cs >= 0 && (rows == 0 || cols == 0 || v.len() > (rows - 1) * rs as usize + (cols - 1) * cs as usize)
    };
    assert!(fits(a, m, k, call.a) && fits(b, k, n, call.b) && fits(c, m, n, (ldc as isize, 1)) && ldc >= n,
        "cpu gemm: buffers of {}/{}/{} floats too short for {call:?}", a.len(), b.len(), c.len());
    let (a, b) = (Mat { ptr: a.as_ptr(), rs: call.a.0, cs: call.a.1 }, Mat { ptr: b.as_ptr(), rs: call.b.0, cs: call.b.1 });
    // SAFETY: A, B and C lie in their slices (asserted); `c` is a unique borrow, so disjoint.
    unsafe { sgemm(m, k, n, a, b, beta, c.as_mut_ptr(), ldc) }
}

/// Which conv op a [`GemmCall`] serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvOp {
    Forward,
    BackwardData,
    BackwardWeights,
}

/// The GEMM calls `op` makes on shape `s`: the same geometry, plans and strides as [`forward`],
/// [`backward_data`] and [`backward_weights`] (kept beside them so they change together; the
/// unit test checks they add up to the op's multiply-adds).
pub fn gemm_calls(s: &ConvShape, op: ConvOp) -> Vec<GemmCall> {
    let g = geo(s);
    let (m, k, n) = (g.m, g.k, g.n);
    let call = |m, k, n, a: (usize, usize), b: (usize, usize), beta, ldc| GemmCall {
        m, k, n, a: (a.0 as isize, a.1 as isize), b: (b.0 as isize, b.1 as isize), beta, ldc,
    };
    let mut out = Vec::new();
    for _gi in 0..s.groups {
        match op {
            ConvOp::Forward => {
                for t in forward_plan(s, &g) {
                    let w = t.cols.len();
                    let (b, ldc) = if t.imgs == 1 { (if g.direct { n } else { w }, n) } else { (w, w) };
                    out.push(call(t.rows.len(), k, w, (k, 1), (b, 1), 0.0, ldc));
                }
            }
            ConvOp::BackwardData if g.direct => {
                for _b in 0..s.batch {
                    for r in gemm_split(n, 1, k, ITEMS.div_ceil(s.batch), MIN_COLS, 16) {
                        out.push(call(k, m, r.len(), (1, k), (n, 1), 1.0, n));
                    }
                }
            }
            ConvOp::BackwardData => {
                for blk in backward_data_plan(s, &g) {
                    let cols = blk.imgs * n;
                    out.push(call(blk.chs.len() * g.ss, m, cols, (1, k), (cols, 1), 0.0, cols));
                }
            }
            ConvOp::BackwardWeights => {
                for t in backward_weights_plan(&g) {
                    for _b in 0..s.batch {
                        out.push(call(t.rows.len(), n, t.cols.len(), (n, 1), (1, n), 1.0, k));
                    }
                }
            }
        }
    }
    out
}
