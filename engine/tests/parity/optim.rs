//! Parity of shaders-wgsl/optim.wgsl: SGD and Adam updates against f64 formulas.

use super::*;

#[test]
fn sgd_and_adam_updates() {
    let g = gpu_or_skip!();
    let n = 517;
    let hw = data(n, 190, -1.0, 1.0);
    let hu = data(n, 191, -1.0, 1.0);
    let (lr, mom, decay, batch) = (0.01f32, 0.9f32, 0.0005f32, 64.0f32);
    let (w, u) = (up(g, &hw), up(g, &hu));
    g.sgd_update(&w, &u, lr, mom, decay, batch);
    let mut w_r = Vec::new();
    let mut u_r = Vec::new();
    for i in 0..n {
        let uu = hu[i] as f64 + decay as f64 * batch as f64 * hw[i] as f64;
        w_r.push(hw[i] as f64 - lr as f64 / batch as f64 * uu);
        u_r.push(uu * mom as f64);
    }
    assert_close("sgd w", &g.download(&w), &w_r, 1e-6, 1e-7);
    assert_close("sgd upd", &g.download(&u), &u_r, 1e-5, 1e-7);

    let hm = data(n, 192, -0.1, 0.1);
    let hv = data(n, 193, 0.0, 0.1);
    let (w, u, m, v) = (up(g, &hw), up(g, &hu), up(g, &hm), up(g, &hv));
    let (b1, b2, eps, t) = (0.9f32, 0.999f32, 1e-6f32, 3u32);
    g.adam_update(&w, &u, &m, &v, lr, b1, b2, eps, decay, batch, t);
    let (b1d, b2d) = (b1 as f64, b2 as f64);
    let mut w_r = Vec::new();
    let mut m_r = Vec::new();
    let mut v_r = Vec::new();
    for i in 0..n {
        let d = hu[i] as f64 + decay as f64 * batch as f64 * hw[i] as f64;
        let mm = b1d * hm[i] as f64 + (1.0 - b1d) * d;
        let vv = b2d * hv[i] as f64 + (1.0 - b2d) * d * d;
        let mhat = mm / (1.0 - b1d.powi(t as i32));
        let vhat = vv / (1.0 - b2d.powi(t as i32));
        w_r.push(hw[i] as f64 - lr as f64 * mhat / (vhat.sqrt() + eps as f64));
        m_r.push(mm);
        v_r.push(vv);
    }
    assert_close("adam m", &g.download(&m), &m_r, 1e-5, 1e-7);
    assert_close("adam v", &g.download(&v), &v_r, 1e-4, 1e-8);
    assert_close("adam w", &g.download(&w), &w_r, 1e-5, 1e-6);
    assert!(g.download(&u).iter().all(|&x| x == 0.0), "adam zeroes upd");
}
