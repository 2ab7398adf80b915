//! Darknet's SGD and Adam updates (darknet-spec §c) on ordinary (not negated) gradients
//! (shaders-wgsl/optim.wgsl). `upd` holds the gradient summed over the full batch `B`.

use std::cell::Cell;

use super::par::{CHUNK, Par, SharedMut};

/// upd += decay·B·w; w −= (lr/B)·upd; upd *= momentum.
pub(super) fn sgd(par: &Par, w: &mut [f32], upd: &mut [f32], lr: f32, momentum: f32, decay: f32, batch: f32) {
    assert_eq!(w.len(), upd.len(), "cpu sgd_update: lengths differ");
    let (wd, step) = (decay * batch, lr / batch);
    let u = SharedMut::new(upd);
    par.chunks(w, CHUNK, |r, w| {
        // SAFETY: each chunk item takes the same range of `upd` as of `w`.
        let u = unsafe { u.slice_mut(r) };
        for (w, u) in w.iter_mut().zip(u) {
            let uv = *u + wd * *w;
            *w -= step * uv;
            *u = uv * momentum;
        }
    });
}

pub(super) struct AdamHyper {
    pub lr: f32,
    pub b1: f32,
    pub b2: f32,
    pub eps: f32,
    pub decay: f32,
    pub batch: f32,
    /// 1-based step count (t = 0 would divide by zero in the bias corrections).
    pub t: u32,
}

/// d = upd + decay·B·w; m = b1·m + (1−b1)·d; v = b2·v + (1−b2)·d²;
/// w −= lr·(m/(1−b1^t)) / (√(v/(1−b2^t)) + eps); upd = 0.
pub(super) fn adam(w: &[Cell<f32>], upd: &[Cell<f32>], m: &[Cell<f32>], v: &[Cell<f32>], h: &AdamHyper) {
    for len in [upd.len(), m.len(), v.len()] {
        assert_eq!(w.len(), len, "cpu adam_update: lengths differ");
    }
    assert!(h.t >= 1, "cpu adam_update: step t must be ≥ 1");
    let t = i32::try_from(h.t).unwrap_or(i32::MAX);
    let (c1, c2) = (1.0 - h.b1.powi(t), 1.0 - h.b2.powi(t));
    let wd = h.decay * h.batch;
    for i in 0..w.len() {
        let d = upd[i].get() + wd * w[i].get();
        let mi = h.b1 * m[i].get() + (1.0 - h.b1) * d;
        let vi = h.b2 * v[i].get() + (1.0 - h.b2) * d * d;
        m[i].set(mi);
        v[i].set(vi);
        w[i].set(w[i].get() - h.lr * (mi / c1) / ((vi / c2).sqrt() + h.eps));
        upd[i].set(0.0);
    }
}
