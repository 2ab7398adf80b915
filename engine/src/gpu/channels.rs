//! Per-channel work over `[batch][channel][pixel]` tensors: batch normalisation (with the fused
//! activation of the composite ops), bias, and the deterministic chunked reductions they share
//! (shaders-wgsl/include/reduce.wgsl).
//!
//! A channel's batch·spatial values are cut into chunks fixed by the shape alone, so that every
//! reduction launches channels × chunks workgroups (layer 0 of yolov4-tiny at batch 64: 32
//! channels × 704 chunks instead of 32 workgroups) and still sums in one fixed order.

use super::params::{BiasP, BnP, off, u};
use super::pipelines::{GemmTile, Kernel, bn_form_code};
use super::{GpuBackend, GpuBuf};
use crate::backend::BnTensors;
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
        let ch = Chunks::of(s);
        let scratch = self.channel_scratch(2 * s.channels * ch.count);
        let base = bn_params(s, ch);
        let t = GemmTile::DEFAULT;
        let n = s.len();
        let mut rec = self.lock();
        let p = BnP { o1: off(x), o2: off(&scratch), ..base };
        let grid = self.grid((s.channels * ch.count) as u64);
        self.dispatch_locked(&mut rec, Kernel::BnPartials, t, &[x, &scratch], &p, grid, Work::elementwise(n, 2, 0, 3));
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
    /// pre-activation when given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bn_forward_fused(
        &self, x: &GpuBuf, y: &GpuBuf, pre: Option<&GpuBuf>, bn: &BnTensors<'_, GpuBuf>, act: Activation, s: &ChannelShape,
        stats: BnStats,
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
        let p = BnP {
            o1: off(x),
            o2: off(y),
            o3: off(bn.x_norm),
            o4: off(bn.mean),
            o5: off(bn.var),
            o6: off(bn.gamma),
            o7: off(bn.beta),
            o8: off(pre_buf),
            act: act.code(),
            has_pre: u32::from(pre.is_some()),
            ..bn_params(s, Chunks::of(s))
        };
        let bufs = [x, y, bn.x_norm, bn.mean, bn.var, bn.gamma, bn.beta, pre_buf];
        let writes = 2 + usize::from(pre.is_some());
        self.dispatch_1d(Kernel::BnNormalize, &bufs, &p, n, Work::elementwise(n, 1, writes, 6));
    }

    /// Backward through `act` and batch norm: `dy` (gradient w.r.t. the activation's output `y`)
    /// → `dx` (may alias `dy`); dgamma and dbeta accumulate.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bn_backward_fused(
        &self, dy: &GpuBuf, y: &GpuBuf, dx: &GpuBuf, bn: &BnTensors<'_, GpuBuf>, act: Activation, s: &ChannelShape, form: BnBackward,
    ) {
        let n = s.len();
        for (w, b) in [("dy", dy), ("y", y), ("x_norm", bn.x_norm), ("dx", dx)] {
            check(&format!("batchnorm_backward {w}"), b, n);
        }
        for (w, b) in [("var", bn.var), ("gamma", bn.gamma), ("beta", bn.beta), ("dgamma", bn.dgamma), ("dbeta", bn.dbeta)] {
            check(&format!("batchnorm_backward {w}"), b, s.channels);
        }
        let ch = Chunks::of(s);
        let scratch = self.channel_scratch(2 * s.channels * ch.count + 4 * s.channels);
        let base = BnP { act: act.code(), form: bn_form_code(form), ..bn_params(s, ch) };
        let reads = if act == Activation::Linear { 2 } else { 3 };
        let t = GemmTile::DEFAULT;
        let mut rec = self.lock();
        let p = BnP { o1: off(dy), o2: off(y), o3: off(bn.x_norm), o4: off(bn.gamma), o5: off(bn.beta), o6: off(&scratch), ..base };
        let grid = self.grid((s.channels * ch.count) as u64);
        let bufs = [dy, y, bn.x_norm, bn.gamma, bn.beta, &scratch];
        self.dispatch_locked(&mut rec, Kernel::BnBackwardPartials, t, &bufs, &p, grid, Work::elementwise(n, reads, 0, 4));
        let p = BnP { o1: off(&scratch), o2: off(bn.var), o3: off(bn.gamma), o4: off(bn.dgamma), o5: off(bn.dbeta), ..base };
        let bufs = [&scratch, bn.var, bn.gamma, bn.dgamma, bn.dbeta];
        let grid = self.grid((s.channels as u64).div_ceil(256));
        self.dispatch_locked(&mut rec, Kernel::BnBackwardCombine, t, &bufs, &p, grid, Work::elementwise(2 * s.channels * ch.count, 1, 0, 1));
        let p = BnP {
            o1: off(dy),
            o2: off(y),
            o3: off(bn.x_norm),
            o4: off(bn.gamma),
            o5: off(bn.beta),
            o6: off(&scratch),
            o7: off(dx),
            ..base
        };
        let bufs = [dy, y, bn.x_norm, bn.gamma, bn.beta, &scratch, dx];
        let grid = self.grid((n as u64).div_ceil(256));
        self.dispatch_locked(&mut rec, Kernel::BnBackwardApply, t, &bufs, &p, grid, Work::elementwise(n, reads, 1, 6));
    }

    /// dbias[c] += Σ dy over channel c (chunk partials, then an ordered combine).
    pub(super) fn bias_backward_chunked(&self, dy: &GpuBuf, dbias: &GpuBuf, s: &ChannelShape) {
        check("bias_backward dy", dy, s.len());
        check("bias_backward dbias", dbias, s.channels);
        let ch = Chunks::of(s);
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
        let p = BiasP { o1: off(dy), o2: off(&scratch), ..base };
        let grid = self.grid((s.channels * ch.count) as u64);
        self.dispatch_locked(&mut rec, Kernel::BiasPartials, t, &[dy, &scratch], &p, grid, Work::elementwise(s.len(), 1, 0, 1));
        let p = BiasP { o1: off(&scratch), o2: off(dbias), ..base };
        let grid = self.grid((s.channels as u64).div_ceil(256));
        self.dispatch_locked(&mut rec, Kernel::BiasCombine, t, &[&scratch, dbias], &p, grid, Work::elementwise(s.channels * ch.count, 1, 1, 1));
    }
}
