//! Elementwise ops (shaders-wgsl/blas.wgsl). All work index by index on cells, so an output may
//! alias an input: element `i` is read before element `i` is written.

use std::cell::Cell;

fn check(op: &str, a: usize, b: usize) {
    assert_eq!(a, b, "cpu {op}: buffer lengths differ");
}

pub(super) fn fill(x: &[Cell<f32>], value: f32) {
    for c in x {
        c.set(value);
    }
}

pub(super) fn copy(src: &[Cell<f32>], dst: &[Cell<f32>]) {
    check("copy", src.len(), dst.len());
    for (d, s) in dst.iter().zip(src) {
        d.set(s.get());
    }
}

/// y += a*x
pub(super) fn axpy(a: f32, x: &[Cell<f32>], y: &[Cell<f32>]) {
    check("axpy", x.len(), y.len());
    for (y, x) in y.iter().zip(x) {
        y.set(y.get() + a * x.get());
    }
}

pub(super) fn scal(a: f32, x: &[Cell<f32>]) {
    for c in x {
        c.set(c.get() * a);
    }
}

/// out = f(a, b)
pub(super) fn binary(a: &[Cell<f32>], b: &[Cell<f32>], out: &[Cell<f32>], f: impl Fn(f32, f32) -> f32) {
    check("binary op", a.len(), out.len());
    check("binary op", b.len(), out.len());
    for i in 0..out.len() {
        out[i].set(f(a[i].get(), b[i].get()));
    }
}

/// out = f(x)
pub(super) fn unary(x: &[Cell<f32>], out: &[Cell<f32>], f: impl Fn(f32) -> f32) {
    check("unary op", x.len(), out.len());
    for (o, x) in out.iter().zip(x) {
        o.set(f(x.get()));
    }
}

/// (da, db) += f(a, b, g)
pub(super) fn binary_backward(
    a: &[Cell<f32>], b: &[Cell<f32>], g: &[Cell<f32>], da: &[Cell<f32>], db: &[Cell<f32>],
    f: impl Fn(f32, f32, f32) -> (f32, f32),
) {
    for len in [b.len(), g.len(), da.len(), db.len()] {
        check("binary backward", a.len(), len);
    }
    for i in 0..a.len() {
        let (ga, gb) = f(a[i].get(), b[i].get(), g[i].get());
        da[i].set(da[i].get() + ga);
        db[i].set(db[i].get() + gb);
    }
}

/// dx += f(x, g)
pub(super) fn unary_backward(x: &[Cell<f32>], g: &[Cell<f32>], dx: &[Cell<f32>], f: impl Fn(f32, f32) -> f32) {
    check("unary backward", x.len(), g.len());
    check("unary backward", x.len(), dx.len());
    for i in 0..x.len() {
        dx[i].set(dx[i].get() + f(x[i].get(), g[i].get()));
    }
}
