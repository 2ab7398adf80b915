//! Parity of shaders-wgsl/dropout.wgsl: the mask matches the host hash bit for bit.

use super::*;

#[test]
fn dropout_matches_the_host_hash_bit_for_bit() {
    let g = gpu_or_skip!();
    let n = 4099;
    let p = 0.3f32;
    let seed = engine::rng::dropout_seed(42, 7, 3);
    let hx = data(n, 180, -1.0, 1.0);
    let x = up(g, &hx);
    let y = g.alloc(n);
    g.dropout_forward(&x, &y, p, seed);
    let yv = g.download(&y);
    let scale = 1.0 / (1.0 - p);
    for i in 0..n {
        let keep = engine::rng::dropout_keep(seed, i as u32, p);
        let want = if keep { hx[i] * scale } else { 0.0 };
        assert_eq!(yv[i], want, "dropout forward [{i}] (keep {keep})");
    }
    let dx0 = data(n, 181, -1.0, 1.0);
    let dx = up(g, &dx0);
    g.dropout_backward(&x, &dx, p, seed);
    let dxv = g.download(&dx);
    for i in 0..n {
        let keep = engine::rng::dropout_keep(seed, i as u32, p);
        let want = if keep { dx0[i] as f64 + hx[i] as f64 / (1.0 - p as f64) } else { dx0[i] as f64 };
        assert!((dxv[i] as f64 - want).abs() <= 1e-6, "dropout backward [{i}]: {} vs {want}", dxv[i]);
    }
}
