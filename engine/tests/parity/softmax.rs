//! Parity of shaders-wgsl/softmax.wgsl with its CPU twin (engine/src/cpu/softmax.rs).
//! Tolerances: probabilities and gradients atol 1e-6 + rtol 2e-5 (GPU exp differs by a few ulp);
//! the cost, a sum of ~100 terms in another order, rtol 1e-5 of Σ|terms| + 1e-6.

use super::*;
use engine::shapes::{SECRET_NUM, SoftmaxShape};
use engine::yolo_stats::{CLASS_LOSS, CLS_ONLY_LOSS, COST, STATS_LEN};

#[test]
fn softmax_forward_and_loss_match_the_cpu() {
    let g = gpu_or_skip!();
    let c = CpuBackend::new();
    // Odd sizes; 300 rows (> one workgroup of 256) at groups 3; a temperature ≠ 1.
    for s in [
        SoftmaxShape { batch: 3, inputs: 37, groups: 1, temperature: 1.0 },
        SoftmaxShape { batch: 100, inputs: 21, groups: 3, temperature: 0.7 },
    ] {
        let hx = data(s.len(), 300 + s.inputs as u64, -6.0, 6.0);
        let mut ht = vec![0.0f32; s.len()];
        for r in 0..s.rows() {
            ht[r * s.group_len() + r % s.group_len()] = 1.0;
        }
        ht[1] = SECRET_NUM;
        let (gx, gy, gt, gdx, gst) = (up(g, &hx), g.alloc(s.len()), up(g, &ht), g.alloc(s.len()), g.alloc(STATS_LEN));
        g.softmax_forward(&gx, &gy, &s);
        g.softmax_loss(&gy, &gt, &gdx, &gst, &s);
        let (cx, cy, ct, cdx, cst) = (c.alloc(s.len()), c.alloc(s.len()), c.alloc(s.len()), c.alloc(s.len()), c.alloc(STATS_LEN));
        c.upload(&cx, &hx);
        c.upload(&ct, &ht);
        c.softmax_forward(&cx, &cy, &s);
        c.softmax_loss(&cy, &ct, &cdx, &cst, &s);
        let what = format!("softmax {s:?}");
        assert_close(&format!("{what} y"), &g.download(&gy), &f64s(&c.download(&cy)), 2e-5, 1e-6);
        assert_close(&format!("{what} dx"), &g.download(&gdx), &f64s(&c.download(&cdx)), 2e-5, 1e-6);
        let (gs, cs) = (g.download(&gst), c.download(&cst));
        let cy = c.download(&cy);
        let abs_sum: f64 = ht.iter().zip(&cy).filter(|(t, _)| **t != 0.0 && **t != SECRET_NUM).map(|(t, p)| (t * p.ln()).abs() as f64).sum();
        for slot in [COST, CLASS_LOSS, CLS_ONLY_LOSS] {
            assert_sum_close(&format!("{what} stats[{slot}]"), &gs[slot..slot + 1], &[cs[slot] as f64], &[abs_sum]);
        }
        assert!(gs.iter().enumerate().all(|(i, &v)| [COST, CLASS_LOSS, CLS_ONLY_LOSS].contains(&i) || v == 0.0), "{what}: other slots 0");
    }
}
