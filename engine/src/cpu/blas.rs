//! Elementwise ops (shaders-wgsl/blas.wgsl). `fill`, `copy`, `axpy` and `scal` (every step's
//! gradient resets and accumulations) run on plain slices in chunks on the workers; the general
//! ops below them work index by index on cells, so an output may alias an input in any way:
//! element `i` is read before element `i` is written.

use std::cell::Cell;

use super::par::{CHUNK, Inout, Par};

fn check(op: &str, a: usize, b: usize) {
    assert_eq!(a, b, "cpu {op}: buffer lengths differ");
}

pub(super) fn fill(par: &Par, x: &mut [f32], value: f32) {
    par.chunks(x, CHUNK, |_, c| c.fill(value));
}

/// dst = src (distinct views; a view copied onto itself is left as it is by the caller).
pub(super) fn copy(par: &Par, src: &[f32], dst: &mut [f32]) {
    check("copy", src.len(), dst.len());
    par.chunks(dst, CHUNK, |r, d| d.copy_from_slice(&src[r]));
}

/// y += a*x (y may be x itself)
pub(super) fn axpy(par: &Par, a: f32, io: Inout<'_>) {
    match io {
        Inout::Same(y) => par.chunks(y, CHUNK, |_, y| {
            for v in y {
                *v += a * *v;
            }
        }),
        Inout::Split(x, y) => par.chunks(y, CHUNK, |r, y| {
            for (v, &xv) in y.iter_mut().zip(&x[r]) {
                *v += a * xv;
            }
        }),
    }
}

pub(super) fn scal(par: &Par, a: f32, x: &mut [f32]) {
    par.chunks(x, CHUNK, |_, c| {
        for v in c {
            *v *= a;
        }
    });
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
