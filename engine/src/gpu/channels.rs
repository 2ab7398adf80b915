//! Per-channel work over `[batch][channel][pixel]` tensors: batch normalisation (with the fused
//! activation of the composite ops), bias, and the deterministic chunked reductions they share
//! (shaders-wgsl/include/reduce.wgsl).
//!
//! A channel's batch·spatial values are cut into chunks fixed by the shape alone, so that every
//! reduction launches channels × chunks workgroups (layer 0 of yolov4-tiny at batch 64: 32
//! channels × 704 chunks instead of 32 workgroups) and still sums in one fixed order.
//!
//! A tensor larger than one storage binding is dispatched over ranges of images (gpu/chunk.rs)
//! that start on chunk boundaries; the partials are chunk-major (`q·channels + c`), so each range
//! writes one block of them and the combine still reads every chunk of the whole batch in order:
//! the statistics cover the mini-batch, with the same bits as one dispatch gives.

use super::buffers::view;
use super::chunk::Images;
use super::params::{BiasP, BnP, off, u};
use super::pipelines::{GemmTile, Kernel, bn_form_code};
use super::{GpuBackend, GpuBuf};
use crate::backend::{BnTensors, Store};
use crate::profile::Work;
use crate::shapes::{Activation, BnBackward, BnStats, ChannelShape};

/// Values one workgroup of a chunked reduction sums (16 per invocation).
const CHUNK: usize = 4096;

/// How a channel's values are cut (include/reduce.wgsl `chunk_range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunks {
    /// Chunks per channel.
    pub count: usize,
    /// Whole planes per chunk, or 0 when planes are cut into pieces.
    pub ppc: usize,
    pub pieces: usize,
    pub piece_len: usize,
}

impl Chunks {
    pub(crate) fn of(s: &ChannelShape) -> Chunks {
        if s.spatial > CHUNK {
            let pieces = s.spatial.div_ceil(CHUNK);
            let piece_len = s.spatial.div_ceil(pieces);
            Chunks { count: s.batch * pieces, ppc: 0, pieces, piece_len }
        } else {
            let ppc = CHUNK.div_ceil(s.spatial.max(1)).clamp(1, s.batch.max(1));
            Chunks { count: s.batch.div_ceil(ppc).max(1), ppc, pieces: 1, piece_len: s.spatial }
        }
    }

    /// As [`Chunks::of`], with at most `images` whole planes per chunk (a range of images that
    /// binds must hold whole chunks).
    fn within(s: &ChannelShape, images: usize) -> Chunks {
        let ch = Chunks::of(s);
        if ch.ppc <= images.max(1) {
            return ch;
        }
        let ppc = images.max(1);
        Chunks { count: s.batch.div_ceil(ppc).max(1), ppc, ..ch }
    }

    /// The first chunk of a range of images, and its chunk count (ranges start on chunk edges).
    fn of_range(&self, r: Images) -> (usize, usize) {
        match r.start.checked_div(self.ppc) {
            Some(first) => (first, r.count.div_ceil(self.ppc)),
            None => (r.start * self.pieces, r.count * self.pieces),
        }
    }
}

fn check(what: &str, buf: &GpuBuf, want: usize) {
    super::ops::check(what, buf, want);
}

fn bn_params(s: &ChannelShape, ch: Chunks) -> BnP {
    BnP {
        batch: u(s.batch),
        channels: u(s.channels),
        spatial: u(s.spatial),
        chunks: u(ch.count),
        ppc: u(ch.ppc),
        pieces: u(ch.pieces),
        piece_len: u(ch.piece_len),
        coefs: u(2 * s.channels * ch.count),
        act: Activation::Linear.code(),
        ..Default::default()
    }
}

impl GpuBackend {
    /// The chunking of `s` and the ranges of images its per-image views `split` are dispatched
    /// over: the whole batch when they bind as they are, else ranges of whole chunks.
    fn channel_ranges(&self, what: &str, s: &ChannelShape, split: &[(&GpuBuf, usize)]) -> (Chunks, Vec<Images>) {
        if split.iter().all(|(b, _)| b.fits_binding()) {
            return (Chunks::of(s), vec![Images { start: 0, count: s.batch }]);
        }
        let ch = Chunks::within(s, self.images_per_range(what, split));
        (ch, self.image_ranges(what, s.batch, split, ch.ppc.max(1)))
    }

    /// Batch statistics (partials + combine, or Darknet-CPU's serial f32 sums) and the running
    /// statistics' update.
    fn bn_statistics(&self, x: &GpuBuf, bn: &BnTensors<'_, GpuBuf>, s: &ChannelShape, stats: BnStats) {
        if stats == BnStats::DarknetCpu {
            // Darknet's f32 scales 1/N and 1/(N−1), rounded from double as its CPU build does.
            let m = s.batch * s.spatial;
            let p = BnP {
                o1: off(x),
                o2: off(bn.mean),
                o3: off(bn.var),
                o4: off(bn.rolling_mean),
                o5: off(bn.rolling_var),
                inv_n: (1.0 / m as f64) as f32,
                inv_n1: (1.0 / (m.max(2) - 1) as f64) as f32,
                ..bn_params(s, Chunks::of(s))
            };
            let bufs = [x, bn.mean, bn.var, bn.rolling_mean, bn.rolling_var];
            self.dispatch(Kernel::BnStatsDarknetCpu, &bufs, &p, self.grid(s.channels as u64), Work::elementwise(s.len(), 2, 0, 3));
            return;
        }
        let img = s.channels * s.spatial;
        let (ch, ranges) = self.channel_ranges("batchnorm statistics", s, &[(x, img)]);
        let scratch = self.channel_scratch(2 * s.channels * ch.count);
        let base = bn_params(s, ch);
        let t = GemmTile::DEFAULT;
        let mut rec = self.lock();
        for r in ranges {
            let (q0, qn) = ch.of_range(r);
            let xs = view(x, r.start * img, r.count * img);
            let part = view(&scratch, 2 * s.channels * q0, 2 * s.channels * qn);
            let p = BnP { batch: u(r.count), chunks: u(qn), o1: off(&xs), o2: off(&part), ..base };
            let grid = self.grid((s.channels * qn) as u64);
            self.dispatch_locked(&mut rec, Kernel::BnPartials, t, &[&xs, &part], &p, grid, Work::elementwise(xs.len(), 2, 0, 3));
        }
        let p = BnP {
            o1: off(&scratch),
            o2: off(bn.mean),
            o3: off(bn.var),
            o4: off(bn.rolling_mean),
            o5: off(bn.rolling_var),
            ..base
        };
        let bufs = [&scratch, bn.mean, bn.var, bn.rolling_mean, bn.rolling_var];
        let grid = self.grid((s.channels as u64).div_ceil(256));
        self.dispatch_locked(&mut rec, Kernel::BnCombine, t, &bufs, &p, grid, Work::elementwise(2 * s.channels * ch.count, 1, 0, 8));
    }

    /// Training forward of batch norm with `act` fused into the write-out; `pre` receives the
    /// pre-activation when given; `y` is rounded to f16 as it is written under [`Store::F16`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bn_forward_fused(
        &self, x: &GpuBuf, y: &GpuBuf, pre: Option<&GpuBuf>, bn: &BnTensors<'_, GpuBuf>, act: Activation, s: &ChannelShape,
        stats: BnStats, store: Store,
    ) {
        let n = s.len();
        for (w, b) in [("x", x), ("y", y), ("x_norm", bn.x_norm)] {
            check(&format!("batchnorm {w}"), b, n);
        }
        if let Some(b) = pre {
            check("batchnorm pre-activation", b, n);
        }
        for (w, b) in [("mean", bn.mean), ("var", bn.var), ("rolling_mean", bn.rolling_mean), ("rolling_var", bn.rolling_var), ("gamma", bn.gamma), ("beta", bn.beta)] {
            check(&format!("batchnorm {w}"), b, s.channels);
        }
        self.bn_statistics(x, bn, s, stats);
        let pre_buf = pre.unwrap_or(y);
        let img = s.channels * s.spatial;
        let split = [(x, img), (y, img), (bn.x_norm, img), (bn.mean, 0), (bn.var, 0), (bn.gamma, 0), (bn.beta, 0), (pre_buf, img)];
        self.per_images("batchnorm", s.batch, &split, |r, v| {
            let p = BnP {
                batch: u(r.count),
                o1: off(v[0]),
                o2: off(v[1]),
                o3: off(v[2]),
                o4: off(v[3]),
                o5: off(v[4]),
                o6: off(v[5]),
                o7: off(v[6]),
                o8: off(v[7]),
                act: act.code(),
                has_pre: u32::from(pre.is_some()),
                store_f16: u32::from(store == Store::F16),
                ..bn_params(s, Chunks::of(s))
            };
            let n = r.count * img;
            let writes = 2 + usize::from(pre.is_some());
            self.dispatch_act_1d(Kernel::BnNormalize, p.act, v, &p, n, Work::elementwise(n, 1, writes, 6));
        });
    }

    /// Backward through `act` and batch norm: `dy` (gradient w.r.t. the activation's output `y`)
    /// → `dx` (may alias `dy`); dgamma and dbeta accumulate. Under [`Store::F16`] `dy` is rounded
    /// to f16 wherever it is read and `dx` as it is written.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bn_backward_fused(
        &self, dy: &GpuBuf, y: &GpuBuf, dx: &GpuBuf, bn: &BnTensors<'_, GpuBuf>, act: Activation, s: &ChannelShape, form: BnBackward,
        store: Store,
    ) {
        let n = s.len();
        for (w, b) in [("dy", dy), ("y", y), ("x_norm", bn.x_norm), ("dx", dx)] {
            check(&format!("batchnorm_backward {w}"), b, n);
        }
        for (w, b) in [("var", bn.var), ("gamma", bn.gamma), ("beta", bn.beta), ("dgamma", bn.dgamma), ("dbeta", bn.dbeta)] {
            check(&format!("batchnorm_backward {w}"), b, s.channels);
        }
        let img = s.channels * s.spatial;
        let split = [(dy, img), (y, img), (bn.x_norm, img), (dx, img)];
        let (ch, ranges) = self.channel_ranges("batchnorm_backward", s, &split);
        let scratch = self.channel_scratch(2 * s.channels * ch.count + 4 * s.channels);
        let base = BnP { act: act.code(), form: bn_form_code(form), store_f16: u32::from(store == Store::F16), ..bn_params(s, ch) };
        let reads = if act == Activation::Linear { 2 } else { 3 };
        let t = GemmTile::DEFAULT;
        let mut rec = self.lock();
        for r in &ranges {
            let (q0, qn) = ch.of_range(*r);
            let [d, yy, xn] = [dy, y, bn.x_norm].map(|b| view(b, r.start * img, r.count * img));
            let part = view(&scratch, 2 * s.channels * q0, 2 * s.channels * qn);
            let p = BnP {
                batch: u(r.count),
                chunks: u(qn),
                o1: off(&d),
                o2: off(&yy),
                o3: off(&xn),
                o4: off(bn.gamma),
                o5: off(bn.beta),
                o6: off(&part),
                ..base
            };
            let grid = self.grid((s.channels * qn) as u64);
            let bufs = [&d, &yy, &xn, bn.gamma, bn.beta, &part];
            self.dispatch_act_locked(&mut rec, Kernel::BnBackwardPartials, t, p.act, &bufs, &p, grid, Work::elementwise(d.len(), reads, 0, 4));
        }
        let p = BnP { o1: off(&scratch), o2: off(bn.var), o3: off(bn.gamma), o4: off(bn.dgamma), o5: off(bn.dbeta), ..base };
        let bufs = [&scratch, bn.var, bn.gamma, bn.dgamma, bn.dbeta];
        let grid = self.grid((s.channels as u64).div_ceil(256));
        self.dispatch_locked(&mut rec, Kernel::BnBackwardCombine, t, &bufs, &p, grid, Work::elementwise(2 * s.channels * ch.count, 1, 0, 1));
        for r in &ranges {
            let [d, yy, xn, dxs] = [dy, y, bn.x_norm, dx].map(|b| view(b, r.start * img, r.count * img));
            let p = BnP {
                batch: u(r.count),
                o1: off(&d),
                o2: off(&yy),
                o3: off(&xn),
                o4: off(bn.gamma),
                o5: off(bn.beta),
                o6: off(&scratch),
                o7: off(&dxs),
                ..base
            };
            let bufs = [&d, &yy, &xn, bn.gamma, bn.beta, &scratch, &dxs];
            let n = d.len();
            let grid = self.grid((n as u64).div_ceil(256));
            self.dispatch_act_locked(&mut rec, Kernel::BnBackwardApply, t, p.act, &bufs, &p, grid, Work::elementwise(n, reads, 1, 6));
        }
    }

    /// dbias[c] += Σ dy over channel c (chunk partials, then an ordered combine).
    pub(super) fn bias_backward_chunked(&self, dy: &GpuBuf, dbias: &GpuBuf, s: &ChannelShape) {
        check("bias_backward dy", dy, s.len());
        check("bias_backward dbias", dbias, s.channels);
        let img = s.channels * s.spatial;
        let (ch, ranges) = self.channel_ranges("bias_backward", s, &[(dy, img)]);
        let scratch = self.channel_scratch(s.channels * ch.count);
        let base = BiasP {
            batch: u(s.batch),
            channels: u(s.channels),
            spatial: u(s.spatial),
            chunks: u(ch.count),
            ppc: u(ch.ppc),
            pieces: u(ch.pieces),
            piece_len: u(ch.piece_len),
            ..Default::default()
        };
        let t = GemmTile::DEFAULT;
        let mut rec = self.lock();
        for r in ranges {
            let (q0, qn) = ch.of_range(r);
            let (d, part) = (view(dy, r.start * img, r.count * img), view(&scratch, s.channels * q0, s.channels * qn));
            let p = BiasP { batch: u(r.count), chunks: u(qn), o1: off(&d), o2: off(&part), ..base };
            let grid = self.grid((s.channels * qn) as u64);
            self.dispatch_locked(&mut rec, Kernel::BiasPartials, t, &[&d, &part], &p, grid, Work::elementwise(d.len(), 1, 0, 1));
        }
        let p = BiasP { o1: off(&scratch), o2: off(dbias), ..base };
        let grid = self.grid((s.channels as u64).div_ceil(256));
        self.dispatch_locked(&mut rec, Kernel::BiasCombine, t, &[&scratch, dbias], &p, grid, Work::elementwise(s.channels * ch.count, 1, 1, 1));
    }
}
