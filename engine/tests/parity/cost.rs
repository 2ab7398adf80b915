//! Parity of shaders-wgsl/cost.wgsl with its CPU twin (engine/src/cpu/cost.rs). Errors and
//! gradients are one or two flops per element: atol 1e-6 + rtol 1e-6; Σ error (another order)
//! rtol 1e-5 of Σ|error| + 1e-6.

use super::*;
use engine::shapes::{CostKind, SECRET_NUM};
use engine::yolo_stats::{COST, STATS_LEN};

#[test]
fn cost_forward_matches_the_cpu() {
    let g = gpu_or_skip!();
    let c = CpuBackend::new();
    let n = 1000; // several values per invocation of the one workgroup
    let hx = data(n, 400, -3.0, 3.0);
    let mut ht = data(n, 401, -1.0, 1.0);
    for i in (0..n).step_by(7) {
        ht[i] = SECRET_NUM;
    }
    for kind in [CostKind::Sse, CostKind::Masked, CostKind::Smooth] {
        let (gx, gt, ge, gdx, gst) = (up(g, &hx), up(g, &ht), g.alloc(n), g.alloc(n), g.alloc(STATS_LEN));
        g.cost_forward(kind, &gx, &gt, &ge, &gdx, &gst);
        let (cx, ct, ce, cdx, cst) = (c.alloc(n), c.alloc(n), c.alloc(n), c.alloc(n), c.alloc(STATS_LEN));
        c.upload(&cx, &hx);
        c.upload(&ct, &ht);
        c.cost_forward(kind, &cx, &ct, &ce, &cdx, &cst);
        let what = format!("cost {}", kind.darknet_name());
        let ce = c.download(&ce);
        assert_close(&format!("{what} error"), &g.download(&ge), &f64s(&ce), 1e-6, 1e-6);
        assert_close(&format!("{what} dx"), &g.download(&gdx), &f64s(&c.download(&cdx)), 1e-6, 1e-6);
        let abs_sum: f64 = ce.iter().map(|e| e.abs() as f64).sum();
        assert_sum_close(&format!("{what} Σ error"), &g.download(&gst)[COST..COST + 1], &[c.download(&cst)[COST] as f64], &[abs_sum]);
    }
}
