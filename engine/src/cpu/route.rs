//! Route's strided slice copy and scale_channels (shaders-wgsl/route.wgsl).

use std::cell::Cell;

use super::par::{CHUNK, Par, SharedMut};
use crate::shapes::SliceCopy;

/// `dst[b·dst_stride + dst_offset + i] (= or +=) src[b·src_stride + src_offset + i]`; one item
/// per image and `CHUNK` of its slice.
pub(super) fn copy_slices(par: &Par, src: &[f32], dst: &mut [f32], s: &SliceCopy) {
    if s.batch == 0 || s.len == 0 {
        return;
    }
    let last = s.batch - 1;
    assert!(last * s.src_stride + s.src_offset + s.len <= src.len(), "cpu copy_slices: source range out of bounds {s:?}");
    assert!(last * s.dst_stride + s.dst_offset + s.len <= dst.len(), "cpu copy_slices: destination range out of bounds {s:?}");
    assert!(s.batch == 1 || s.dst_stride >= s.len, "cpu copy_slices: destination slices overlap {s:?}");
    let out = SharedMut::new(dst);
    let pieces = s.len.div_ceil(CHUNK);
    par.for_each(s.batch * pieces, |item| {
        let (b, p) = (item / pieces, item % pieces);
        let r = p * CHUNK..((p + 1) * CHUNK).min(s.len);
        let from = &src[b * s.src_stride + s.src_offset..][r.clone()];
        let d0 = b * s.dst_stride + s.dst_offset;
        // SAFETY: the destination slices of different images are disjoint (asserted), and each
        // item takes its own piece of one.
        let to = unsafe { out.slice_mut(d0 + r.start..d0 + r.end) };
        if s.accumulate {
            for (d, v) in to.iter_mut().zip(from) {
                *d += v;
            }
        } else {
            to.copy_from_slice(from);
        }
    });
}

fn check(op: &str, x: usize, scale: usize, planes: usize, spatial: usize) {
    assert_eq!(x, planes * spatial, "cpu {op}: tensor length != batch·channels·spatial");
    assert_eq!(scale, planes, "cpu {op}: scale length != batch·channels");
}

/// y[p][i] = x[p][i] · scale[p], p = b·channels + c.
pub(super) fn scale_channels_forward(x: &[Cell<f32>], scale: &[Cell<f32>], y: &[Cell<f32>], planes: usize, spatial: usize) {
    check("scale_channels_forward", x.len(), scale.len(), planes, spatial);
    assert_eq!(y.len(), x.len(), "cpu scale_channels_forward: output length");
    for (i, (y, x)) in y.iter().zip(x).enumerate() {
        y.set(x.get() * scale[i / spatial].get());
    }
}

/// dx += dy·scale; dscale[p] += Σ_i dy·x (f64 sum).
#[allow(clippy::too_many_arguments)]
pub(super) fn scale_channels_backward(
    x: &[Cell<f32>], scale: &[Cell<f32>], dy: &[Cell<f32>], dx: &[Cell<f32>], dscale: &[Cell<f32>],
    planes: usize, spatial: usize,
) {
    check("scale_channels_backward", x.len(), scale.len(), planes, spatial);
    assert_eq!(dy.len(), x.len(), "cpu scale_channels_backward: dy length");
    assert_eq!(dx.len(), x.len(), "cpu scale_channels_backward: dx length");
    assert_eq!(dscale.len(), planes, "cpu scale_channels_backward: dscale length");
    for p in 0..planes {
        let sc = scale[p].get();
        let mut acc = 0.0f64;
        for i in p * spatial..(p + 1) * spatial {
            let g = dy[i].get();
            acc += g as f64 * x[i].get() as f64;
            dx[i].set(dx[i].get() + g * sc);
        }
        dscale[p].set(dscale[p].get() + acc as f32);
    }
}
