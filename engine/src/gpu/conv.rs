//! The convolution GEMMs (conv.wgsl): tile choice per shape, split-K, params and dispatches.
//!
//! Tile rule (measured on an H100, see `cargo bench --bench conv_tiles`): a workgroup owns a
//! BM × BN block of C. Forward and backward data take the widest BM their rows fill (128, 64 or
//! 32 rows) with BN = 128 columns; the index arithmetic is specialised for 1×1 and 3×3 kernels.
//! Backward weights has few rows and columns (the weights) and a very long K (every pixel of the
//! batch): 64×64 tiles walk K 16 at a time and K is split over enough workgroups to fill the GPU,
//! the splits summed in a fixed order.
//!
//! On a CPU adapter (lavapipe, which runs the main job's GPU lane) padding costs as much as real
//! work, so GEMMs of few columns take narrow tiles, and a backward-weights GEMM whose outputs have
//! fewer pixels than its K tile walks K in shorter tiles. Neither changes a bit: every output sums K in one order whatever the tile, and the
//! weights' split-K is kept (`tests/gpu_conv_shapes.rs` compares the tiles bit for bit). Where
//! such an adapter has subgroups (gpu/lanes.rs), the lane tiles take over: 8–16 rows and 4
//! columns per invocation, rows of A shuffled through the subgroup (`lane_row_tile`,
//! `GpuBackend::lane_weight_tile`, from the sweep on lavapipe with lanes).

use super::chunk::{Images, images};
use super::conv_col::ColMatrix;
use super::params::{ConvP, off, u};
use super::pipelines::{ACT_ANY, GemmTile, Kernel};
use super::{GpuBackend, GpuBuf};
use crate::profile::Work;
use crate::shapes::{Activation, ConvShape};

/// Workgroups a backward-weights dispatch should reach before K is split further.
const SPLITK_TARGET_GROUPS: usize = 1024;
/// Fewest K tiles per split (each split writes a partial of every weight).
const SPLITK_MIN_TILES: usize = 8;
/// Most scratch floats the split-K partials may use.
const SPLITK_MAX_SCRATCH: usize = 16 << 20;

const fn tile(ty: u32, tx: u32, tm: u32, tn: u32, bk: u32) -> GemmTile {
    GemmTile { ty, tx, tm, tn, bk, ks: 0, stages: 1, pad: 0 }
}

/// Forward / backward-data tiles by row count, widest first.
const ROW_TILES: [GemmTile; 3] = [tile(16, 16, 8, 8, 8), tile(16, 16, 4, 8, 8), tile(8, 32, 4, 4, 8)];
/// Backward-weights tiles.
const WEIGHT_TILES: [GemmTile; 3] = [tile(16, 16, 4, 4, 16), tile(8, 32, 4, 4, 16), tile(16, 16, 8, 8, 16)];
/// Narrow forward / backward-data tiles for GEMMs of few columns (N = batch·oh·ow: the deep
/// layers of small images), 128 × 32 and 128 × 64: used on CPU adapters (lavapipe), where a
/// 128-column tile over 16 columns computes 8 times the work it keeps (the sweep on lavapipe,
/// yolov4-tiny at 64×64 batch 4). Each output still sums K in the same order. (16 columns would
/// take 256 rows, whose A tile alone fills the 16 KiB of workgroup memory.)
const NARROW_ROW_TILES: [GemmTile; 2] = [tile(32, 8, 4, 4, 8), tile(16, 16, 8, 4, 8)];
/// Further tiles the sweep (`cargo bench --bench conv_tiles`) measures against the rule's.
const EXTRA_ROW_TILES: [GemmTile; 5] =
    [tile(16, 16, 8, 8, 16), NARROW_ROW_TILES[1], tile(16, 16, 4, 8, 16), tile(16, 16, 4, 4, 8), NARROW_ROW_TILES[0]];
const EXTRA_WEIGHT_TILES: [GemmTile; 4] = [tile(16, 16, 8, 8, 8), tile(16, 16, 4, 4, 32), tile(16, 16, 4, 8, 16), SHORT_K_WEIGHT_TILE];
/// Backward weights 64 × 64 walking K 4 pixels at a time: for outputs of fewer pixels than the
/// rule's K tile (2×2 at the end of yolov4-tiny at 64×64), on CPU adapters, where the rule's 16
/// would multiply 12 padding zeros for every 4 pixels.
const SHORT_K_WEIGHT_TILE: GemmTile = tile(16, 16, 4, 4, 4);
/// Backward weights on CPU adapters where more than 32 filters meet at least 128 weights each:
/// 64 × 128, K 16 (the sweep on lavapipe, yolov4-tiny at 64×64 batch 4).
const CPU_WEIGHT_TILE: GemmTile = tile(16, 16, 4, 8, 16);
/// Forward / backward-data tiles for conv.wgsl with subgroup lanes (CPU adapters,
/// include/tile_lanes.wgsl): many rows and 4 columns per invocation, since there a lane's rows of
/// A come through shuffles and its columns of B through lane-by-lane reads: 256 × 32, 256 × 64,
/// 128 × 128, 64 × 128 and 32 × 256.
const LANE_ROW_TILES: [GemmTile; 5] = [tile(32, 8, 8, 4, 8), tile(16, 16, 16, 4, 8), tile(8, 32, 16, 4, 8), tile(8, 32, 8, 4, 8), tile(4, 64, 8, 4, 8)];
/// Backward-weights tiles likewise: 64 × 128, 128 × 64 and 128 × 128 walking K 16 at a time, and
/// 128 × 64 walking it 4 at a time.
const LANE_WEIGHT_TILES: [GemmTile; 4] = [tile(8, 32, 8, 4, 16), tile(16, 16, 8, 4, 16), tile(8, 32, 16, 4, 16), tile(16, 16, 8, 4, 4)];
/// Kernel sizes with specialised index arithmetic (others read the size from the params).
const SPECIAL_SIZES: [u32; 2] = [1, 3];
/// Mixed precision's tiles (conv_mixed.wgsl, cooperative matrices): K 16 at a time (one matrix
/// step); forward / backward data 128, 64 or 32 rows by 128 columns, as the fp32 rule.
const MIXED_ROW_TILES: [GemmTile; 3] = [tile(16, 16, 8, 8, 16), tile(16, 16, 4, 8, 16), tile(8, 32, 4, 4, 16)];
/// Backward weights: 128 × 128, 128 × 64, 64 × 128, 64 × 64 and 32 × 128 (rows × columns).
const MIXED_WEIGHT_TILES: [GemmTile; 5] =
    [tile(16, 16, 8, 8, 16), tile(16, 16, 8, 4, 16), tile(16, 16, 4, 8, 16), tile(16, 16, 4, 4, 16), tile(8, 32, 4, 4, 16)];
/// The conv module variant conv_im2col_f16 is built from (it uses no tile).
pub(crate) const IM2COL_TILE: GemmTile = WEIGHT_TILES[0];
/// The tile conv_mixed.wgsl's default source (what tests parse) is built with.
pub(crate) const MIXED_DEFAULT_TILE: GemmTile = MIXED_ROW_TILES[0];

/// The three convolution GEMMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmKind {
    Forward,
    BackwardData,
    BackwardWeights,
}

impl GemmKind {
    pub const ALL: [GemmKind; 3] = [GemmKind::Forward, GemmKind::BackwardData, GemmKind::BackwardWeights];

    /// Every tile this GEMM can run with (the rule's and the sweep's).
    pub fn candidates(self) -> Vec<GemmTile> {
        match self {
            GemmKind::Forward | GemmKind::BackwardData => ROW_TILES.iter().chain(&EXTRA_ROW_TILES).chain(&LANE_ROW_TILES).copied().collect(),
            GemmKind::BackwardWeights => WEIGHT_TILES.iter().chain(&EXTRA_WEIGHT_TILES).chain(&LANE_WEIGHT_TILES).copied().collect(),
        }
    }
}

/// Every tile variant the backend may build (for the shader translation tests).
pub(crate) fn all_tiles() -> Vec<GemmTile> {
    let mut out = Vec::new();
    for kind in [GemmKind::Forward, GemmKind::BackwardWeights] {
        for t in kind.candidates() {
            for ks in [0].into_iter().chain(SPECIAL_SIZES) {
                out.push(GemmTile { ks, ..t });
            }
        }
    }
    out
}

/// Every tile variant mixed precision's kernels may be built with (for the translation tests).
pub(crate) fn all_mixed_tiles() -> Vec<GemmTile> {
    let mut out = Vec::new();
    for t in MIXED_ROW_TILES.iter().chain(&MIXED_WEIGHT_TILES) {
        for ks in [0].into_iter().chain(SPECIAL_SIZES) {
            let v = GemmTile { ks, ..*t };
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// Every deeper tiling of mixed precision's tiles (`MixedTiling::ALL` beyond the default), built
/// only where the device grants their workgroup memory.
pub(crate) fn all_deep_mixed_tiles() -> Vec<GemmTile> {
    let defaults = all_mixed_tiles();
    let mut out = Vec::new();
    for tiling in super::MixedTiling::ALL {
        for t in &defaults {
            let row_tile = MIXED_ROW_TILES.contains(&GemmTile { ks: 0, ..*t });
            for kind in GemmKind::ALL.into_iter().filter(|&k| row_tile || k == GemmKind::BackwardWeights) {
                let d = deepen(*t, tiling, kind);
                if !defaults.contains(&d) && !out.contains(&d) {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// The most workgroup memory any of mixed precision's tiles declares at `tiling`.
pub(crate) fn mixed_workgroup_bytes(tiling: super::MixedTiling) -> u32 {
    let wide_data = deepen(MIXED_ROW_TILES[0], tiling, GemmKind::BackwardData);
    let tiles = all_mixed_tiles().into_iter().map(|t| deepen(t, tiling, GemmKind::Forward)).chain([wide_data]);
    tiles.map(|t| t.mixed_workgroup_bytes()).max().unwrap_or(0)
}

/// `t` with the device's mixed tiling for a GEMM of `kind` (the tables hold the default's K
/// depth and stages).
fn deepen(t: GemmTile, tiling: super::MixedTiling, kind: GemmKind) -> GemmTile {
    let wide_data = kind == GemmKind::BackwardData && t.bm() == 128;
    GemmTile { bk: tiling.bk, stages: if wide_data { tiling.wide_data_stages } else { tiling.stages }, pad: tiling.pad, ..t }
}

/// Whether conv_mixed.wgsl writes whole tiles out directly at start-up: on unless
/// `ENGINE_GPU_COOP_DIRECT=0`. On an H100 it took the GEMMs from 45.9 to 43.6 ms per step
/// (yolov4-tiny 416, batch 64) and passed the parity tests, which run both write-outs wherever
/// the adapter has cooperative matrices.
pub(crate) fn coop_direct_from_env() -> bool {
    std::env::var("ENGINE_GPU_COOP_DIRECT").map_or(true, |v| v != "0")
}

/// conv_mixed.wgsl's tile for a forward or backward-data GEMM with `m` rows.
fn mixed_row_tile(m: usize, size: usize) -> GemmTile {
    let t = if m >= 128 {
        MIXED_ROW_TILES[0]
    } else if m > 32 {
        MIXED_ROW_TILES[1]
    } else {
        MIXED_ROW_TILES[2]
    };
    specialise(t, size)
}

/// conv_mixed.wgsl's tile for a backward-weights GEMM of `m` filters and `n` weights each.
fn mixed_weight_tile(m: usize, n: usize, size: usize) -> GemmTile {
    let wide = n >= 128;
    let t = match (m >= 128, m > 32, wide) {
        (true, _, true) => MIXED_WEIGHT_TILES[0],
        (true, _, false) => MIXED_WEIGHT_TILES[1],
        (false, true, true) => MIXED_WEIGHT_TILES[2],
        (false, true, false) => MIXED_WEIGHT_TILES[3],
        (false, false, _) => MIXED_WEIGHT_TILES[4],
    };
    specialise(t, size)
}

fn specialise(t: GemmTile, size: usize) -> GemmTile {
    let ks = SPECIAL_SIZES.iter().copied().find(|&k| k as usize == size).unwrap_or(0);
    GemmTile { ks, ..t }
}

/// The tile for a forward or backward-data GEMM with `m` rows and `n` columns; `narrow`: a CPU
/// adapter, where columns past `n` cost as much as kept ones (a GPU's rule was measured where
/// every layer has thousands of columns).
fn row_tile(m: usize, n: usize, size: usize, narrow: bool) -> GemmTile {
    let t = if narrow && n <= 32 {
        NARROW_ROW_TILES[0]
    } else if narrow && n <= 64 {
        NARROW_ROW_TILES[1]
    } else if m >= 128 {
        ROW_TILES[0]
    } else if m > 32 {
        ROW_TILES[1]
    } else {
        ROW_TILES[2]
    };
    specialise(t, size)
}

/// The tile for a forward or backward-data GEMM of `m` rows, `n` columns and depth `k` where
/// conv.wgsl shares A's rows through subgroup lanes (CPU adapters; the sweep on lavapipe,
/// yolov4-tiny at 64×64 batch 4, with lanes): 8 to 16 rows and 4 columns per invocation where
/// the GEMM fills them, 256 × 32 over the 2×2 layers' 16 columns where that still makes two
/// workgroups (one would leave a core idle), 32 × 256 for 32 rows (not for the first layer's K
/// of 27, where 32 × 128 stayed faster), 64 × 64 for at most 128 rows of at most 64 columns (two
/// workgroups again), and the narrow rule's 128 × 32 and 128 × 64 otherwise.
fn lane_row_tile(m: usize, n: usize, k: usize, size: usize) -> GemmTile {
    let t = if n <= 32 && m >= 512 {
        LANE_ROW_TILES[0]
    } else if n >= 256 && m >= 128 {
        LANE_ROW_TILES[2]
    } else if n <= 64 && n > 32 && m <= 128 {
        EXTRA_ROW_TILES[3]
    } else if n <= 64 {
        return row_tile(m, n, size, true);
    } else if m <= 32 && k >= 64 {
        LANE_ROW_TILES[4]
    } else if m <= 32 {
        return row_tile(m, n, size, true);
    } else {
        LANE_ROW_TILES[3]
    };
    specialise(t, size)
}

/// The tile for a backward-weights GEMM of `m` filters: 64×64 (16 of K at a time) above 32
/// filters, 32×128 otherwise. 128×128 with K 16 holds three arrays of 8 B-column indices per
/// invocation on top of its 64 accumulators and spilled on an H100 (2 TFLOP/s against 15 for
/// 64×64); it stays a sweep candidate.
fn weight_tile(m: usize, size: usize) -> GemmTile {
    specialise(if m > 32 { WEIGHT_TILES[0] } else { WEIGHT_TILES[1] }, size)
}

/// Every dimension positive and the groups dividing: conv.wgsl divides by these, and its module
/// runs without wgpu's division guards (pipelines.rs, `Checks::Relaxed`).
fn conv_shape_ok(s: &ConvShape) -> bool {
    s.batch > 0
        && s.groups > 0
        && s.c.is_multiple_of(s.groups)
        && s.filters.is_multiple_of(s.groups)
        && s.stride > 0
        && s.size > 0
        && s.h > 0
        && s.w > 0
        && s.out_h > 0
        && s.out_w > 0
}

/// One stride phase of the backward-data GEMM: the input pixels (py + stride·qy, px + stride·qx)
/// and the taps that reach them, ky = ky0 + stride·j (j < nky), likewise for x. With stride 1
/// there is one phase holding every pixel and tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Phase {
    py: usize,
    px: usize,
    qh: usize,
    qw: usize,
    ky0: usize,
    kx0: usize,
    nky: usize,
    nkx: usize,
}

impl Phase {
    /// The stride² phases of `s`, without those no tap reaches.
    fn all(s: &ConvShape) -> Vec<Phase> {
        let st = s.stride;
        // Pixels of phase p along an axis of length `len`, and its first tap and tap count.
        let axis = |p: usize, len: usize| {
            let q = if p < len { (len - p).div_ceil(st) } else { 0 };
            let k0 = (p + s.pad) % st;
            let nk = if k0 < s.size { (s.size - k0).div_ceil(st) } else { 0 };
            (q, k0, nk)
        };
        let mut out = Vec::new();
        for py in 0..st {
            for px in 0..st {
                let (qh, ky0, nky) = axis(py, s.h);
                let (qw, kx0, nkx) = axis(px, s.w);
                if qh * qw * nky * nkx > 0 {
                    out.push(Phase { py, px, qh, qw, ky0, kx0, nky, nkx });
                }
            }
        }
        out
    }
}

/// Counted work of a convolution GEMM: 2·M·N·K FLOPs (per group), each operand read once and C
/// written once.
fn gemm_work(s: &ConvShape, m: usize, n: usize, k: usize) -> Work {
    let g = s.groups as f64;
    let (m, n, k) = (m as f64, n as f64, k as f64);
    Work { flops: 2.0 * g * m * n * k, bytes: 4.0 * g * (m * k + k * n + m * n) }
}

impl GpuBackend {
    /// Runs `kind` with `tile` instead of the rule's choice until called with `None` (for the
    /// tile sweep; the kernel size specialisation is still applied).
    #[doc(hidden)]
    pub fn force_gemm_tile(&self, kind: GemmKind, tile: Option<GemmTile>) {
        let mut f = self.forced_tiles.lock().unwrap_or_else(|e| e.into_inner());
        f.retain(|(k, _)| *k != kind);
        if let Some(t) = tile {
            f.push((kind, t));
        }
    }

    /// Turns conv_mixed.wgsl's direct write-out of whole tiles on or off (see
    /// [`coop_direct_from_env`]); for the parity test and measurements.
    #[doc(hidden)]
    pub fn set_coop_direct(&self, on: bool) {
        self.coop_direct.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The tiling of conv_mixed.wgsl when the conv GEMMs run on it now: f16 operands declared
    /// and a device with cooperative matrices.
    fn mixed_gemms(&self) -> Option<super::MixedTiling> {
        match self.mixed_gemm {
            super::MixedGemm::Coop16 { tiling } if self.f16_operands() => Some(tiling),
            _ => None,
        }
    }

    /// The conv GEMMs' operands are declared f16 now (`Backend::set_gemm_operands`).
    pub(super) fn f16_operands(&self) -> bool {
        *self.gemm_operands.lock().unwrap_or_else(|e| e.into_inner()) == crate::backend::GemmOperands::F16
    }

    /// The fp32 kernels' tile for a forward or backward-data GEMM of `m` rows, `n` columns and
    /// depth `kdim` (the caller drops the kernel-size specialisation for a strided phase).
    fn fp32_row_tile(&self, kind: GemmKind, s: &ConvShape, m: usize, n: usize, kdim: usize) -> GemmTile {
        let rule = if self.lanes() { lane_row_tile(m, n, kdim, s.size) } else { row_tile(m, n, s.size, self.cpu_adapter()) };
        self.tile_for(kind, rule, s.size)
    }

    /// The fp32 kernels' tile for the backward-weights GEMM of `s`.
    fn fp32_weight_tile(&self, s: &ConvShape) -> GemmTile {
        let (m, n) = (s.filters / s.groups, s.c / s.groups * s.size * s.size);
        let ohw = s.out_h * s.out_w;
        let mut rule = weight_tile(m, s.size);
        // A K tile longer than an output's pixels multiplies padding zeros. With one split
        // every weight sums K in its one order whatever the K tile, so a shorter one gives the
        // same bits; a CPU adapter pays for the zeros (a GPU's rule was measured without them).
        let short = GemmTile { bk: SHORT_K_WEIGHT_TILE.bk, ..rule };
        if self.cpu_adapter()
            && ohw < rule.bk as usize
            && (rule.bm(), rule.bn()) == (SHORT_K_WEIGHT_TILE.bm(), SHORT_K_WEIGHT_TILE.bn())
            && self.weight_splits(s, rule).1 == 1
            && self.weight_splits(s, short).1 == 1
        {
            rule = short;
        } else if self.cpu_adapter() && m > 32 && n >= CPU_WEIGHT_TILE.bn() {
            // 64 × 128 tiles were 5–20 % faster on lavapipe for these shapes; taken only where
            // the K splits stay those of the rule's tile, so every weight keeps its bits.
            let wide = specialise(CPU_WEIGHT_TILE, s.size);
            if self.weight_splits(s, wide) == self.weight_splits(s, rule) {
                rule = wide;
            }
        }
        if self.lanes() {
            rule = self.lane_weight_tile(s, rule);
        }
        self.tile_for(GemmKind::BackwardWeights, rule, s.size)
    }

    /// The fp32 pipelines the GEMMs of `s` run (`dx`: with the backward data), where the batch's
    /// tensors fit one binding: what [`GpuBackend::prepare_pipelines`] makes ahead.
    fn conv_pipelines(&self, s: &ConvShape, dx: bool) -> Vec<(Kernel, GemmTile)> {
        let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
        let ss = s.size * s.size;
        let mut out = vec![(Kernel::ConvForward, self.fp32_row_tile(GemmKind::Forward, s, mg, s.batch * s.out_h * s.out_w, cg * ss))];
        if dx {
            for ph in Phase::all(s) {
                let mut t = self.fp32_row_tile(GemmKind::BackwardData, s, cg, s.batch * ph.qh * ph.qw, mg * ph.nky * ph.nkx);
                if s.stride > 1 {
                    t.ks = 0;
                }
                out.push((Kernel::ConvBackwardData, t));
            }
        }
        let t = self.fp32_weight_tile(s);
        out.push((Kernel::ConvBackwardWeights, t));
        if self.weight_splits(s, t).1 > 1 {
            out.push((Kernel::ConvSplitkReduce, t));
        }
        out
    }

    /// Makes now, on several threads, the pipelines a network's training step will ask for one
    /// by one as it records them (on lavapipe each takes 10–50 ms even from Mesa's shader
    /// cache): every kernel's default build, the kernels applying an activation built for each
    /// of `activations` where the device specialises them, and the fp32 convolution GEMMs of
    /// `convs` (shape, with the backward data) with the tiles their dispatches will choose (none
    /// where the GEMMs take f16 operands). A pipeline this misses is still made on first use.
    pub(super) fn prepare_pipelines(&self, convs: &[(ConvShape, bool)], activations: &[Activation]) {
        let mut keys: Vec<(Kernel, GemmTile, u32)> = Vec::new();
        let mut add = |key| {
            if !keys.contains(&key) {
                keys.push(key);
            }
        };
        if !self.f16_operands() {
            for (s, dx) in convs {
                if !conv_shape_ok(s) || self.col_path(s) || self.data_as_forward(s).is_some() {
                    continue;
                }
                for (k, t) in self.conv_pipelines(s, *dx) {
                    add((k, t, ACT_ANY));
                }
            }
        }
        for key in super::pipelines::default_keys(activations) {
            add(key);
        }
        self.pipelines.prepare(&self.device, &keys);
    }

    /// conv.wgsl shares A's rows through subgroup lanes on this device (gpu/lanes.rs).
    fn lanes(&self) -> bool {
        self.pipelines.lanes() > 0
    }

    /// The backward-weights tile where conv.wgsl shares A's rows through subgroup lanes, in
    /// place of the CPU rule's `rule`: 128 × 128 (16 rows and 4 columns per invocation) for 128
    /// filters or more of 128 weights or more, 128 × 64 for other GEMMs of 128 filters or more,
    /// 64 × 128 for more than 32, each walking K as `rule` does; taken only where the K splits
    /// stay `rule`'s, so every weight keeps its bits (the sweep on lavapipe; 128 × 128 over the
    /// 2×2 layers' K of 16 took their weight gradients from 25.5 to 19.7 ms a step).
    fn lane_weight_tile(&self, s: &ConvShape, rule: GemmTile) -> GemmTile {
        let m = s.filters / s.groups;
        let n = s.c / s.groups * s.size * s.size;
        let lane = if m >= 128 && n >= 128 {
            LANE_WEIGHT_TILES[2]
        } else if m >= 128 {
            LANE_WEIGHT_TILES[1]
        } else if m > 32 && n >= 128 {
            LANE_WEIGHT_TILES[0]
        } else {
            return rule;
        };
        let lane = GemmTile { bk: rule.bk, ks: rule.ks, ..lane };
        if self.weight_splits(s, lane) == self.weight_splits(s, rule) { lane } else { rule }
    }

    /// The adapter is a CPU (lavapipe, llvmpipe): workgroups run one after another on its cores.
    fn cpu_adapter(&self) -> bool {
        self.info.device_type == "cpu"
    }

    /// The rule's tile, or the one forced for `kind`.
    fn tile_for(&self, kind: GemmKind, rule: GemmTile, size: usize) -> GemmTile {
        let f = self.forced_tiles.lock().unwrap_or_else(|e| e.into_inner());
        f.iter().find(|(k, _)| *k == kind).map_or(rule, |&(_, t)| specialise(t, size))
    }

    /// Refuses (panics on) a shape [`conv_shape_ok`] refuses.
    fn check_conv(&self, s: &ConvShape) {
        assert!(conv_shape_ok(s), "gpu conv: bad shape {s:?}");
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_params(&self, s: &ConvShape, m: usize, n: usize, k: usize, t: GemmTile, bufs: [&GpuBuf; 4]) -> ConvP {
        ConvP {
            batch: u(s.batch),
            c: u(s.c),
            h: u(s.h),
            w: u(s.w),
            filters: u(s.filters),
            size: u(s.size),
            stride: u(s.stride),
            pad: u(s.pad),
            oh: u(s.out_h),
            ow: u(s.out_w),
            cg: u(s.c / s.groups),
            mg: u(s.filters / s.groups),
            m: u(m),
            n: u(n),
            k: u(k),
            m_tiles: u(m.div_ceil(t.bm())),
            o1: off(bufs[0]),
            o2: off(bufs[1]),
            o3: off(bufs[2]),
            o4: off(bufs[3]),
            kchunk: 0,
            splits: 1,
            total: u(s.weight_len()),
            has_bias: 0,
            direct: u32::from(self.coop_direct.load(std::sync::atomic::Ordering::Relaxed)),
            ..Default::default()
        }
    }

    /// Forward or backward-data GEMM: grid x (·z) over column tiles, y over row tiles × groups.
    /// `phase` fills the backward-data phase fields (and may forbid the kernel-size
    /// specialisation, which assumes every tap is in the one phase).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_gemm(
        &self, k: Kernel, s: &ConvShape, m: usize, n: usize, kdim: usize, bufs: [&GpuBuf; 4], bias: bool, phase: Option<Phase>,
        col: Option<&ColMatrix>,
    ) {
        if m == 0 || n == 0 || kdim == 0 {
            return;
        }
        let kind = if k == Kernel::ConvForward { GemmKind::Forward } else { GemmKind::BackwardData };
        let (k, mut t) = if let Some(tiling) = self.mixed_gemms() {
            let mk = if kind == GemmKind::Forward { Kernel::ConvForwardMixed } else { Kernel::ConvBackwardDataMixed };
            (mk, deepen(mixed_row_tile(m, s.size), tiling, kind))
        } else {
            (k, self.fp32_row_tile(kind, s, m, n, kdim))
        };
        if s.stride > 1 && phase.is_some() {
            t.ks = 0;
        }
        let mut p = self.conv_params(s, m, n, kdim, t, bufs);
        p.has_bias = u32::from(bias);
        if let Some(c) = col {
            c.set_params(&mut p);
        }
        if let Some(ph) = phase {
            (p.py, p.px, p.qh, p.qw, p.ky0, p.kx0, p.nky, p.nkx) =
                (u(ph.py), u(ph.px), u(ph.qh), u(ph.qw), u(ph.ky0), u(ph.kx0), u(ph.nky), u(ph.nkx));
        }
        let n_tiles = n.div_ceil(t.bn()) as u64;
        let max = self.limits.max_compute_workgroups_per_dimension as u64;
        let x = n_tiles.min(max);
        let z = n_tiles.div_ceil(x);
        let y = (p.m_tiles as usize * s.groups) as u64;
        assert!(y <= max && z <= max, "gpu conv: shape {s:?} too large for one dispatch");
        // The column path's padding columns are not counted as work.
        let mut work = gemm_work(s, m, col.map_or(n, |_| s.batch * s.out_h * s.out_w), kdim);
        if bias {
            work.flops += (m * n * s.groups) as f64;
        }
        let mut rec = self.lock();
        let bufs = [bufs[0], bufs[1], bufs[2], bufs[3], col.map_or(bufs[0], |c| &c.buf)];
        self.dispatch_locked(&mut rec, k, t, &bufs, &p, [x as u32, y as u32, z as u32], work);
    }

    /// y = conv(x, w) (+ bias per filter when given).
    pub(super) fn conv_forward_into(&self, x: &GpuBuf, w: &GpuBuf, y: &GpuBuf, bias: Option<&GpuBuf>, s: &ConvShape) {
        self.check_conv(s);
        super::ops::check("conv_forward x", x, s.input_len());
        super::ops::check("conv_forward w", w, s.weight_len());
        super::ops::check("conv_forward y", y, s.output_len());
        if let Some(b) = bias {
            super::ops::check("conv_forward bias", b, s.filters);
        }
        if self.col_path(s) {
            return self.conv_forward_col(x, w, y, bias, s, None, false);
        }
        let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
        let ss = s.size * s.size;
        // Binding 4 is the bias; without one, bind y (the kernel does not read it then).
        let b4 = bias.map_or((y, per_out(s)), |b| (b, 0));
        let split = [(x, per_in(s)), (w, 0), (y, per_out(s)), b4];
        self.per_images("conv_forward", s.batch, &split, |r, v| {
            let s = ConvShape { batch: r.count, ..*s };
            let n = s.batch * s.out_h * s.out_w;
            self.conv_gemm(Kernel::ConvForward, &s, mg, n, cg * ss, [v[0], v[1], v[2], v[3]], bias.is_some(), None, None);
        });
    }

    pub(super) fn conv_backward_data_into(&self, dy: &GpuBuf, w: &GpuBuf, dx: &GpuBuf, s: &ConvShape) {
        self.check_conv(s);
        super::ops::check("conv_backward_data dy", dy, s.output_len());
        super::ops::check("conv_backward_data w", w, s.weight_len());
        super::ops::check("conv_backward_data dx", dx, s.input_len());
        if let Some(sf) = self.data_as_forward(s) {
            return self.conv_backward_data_col(dy, w, dx, s, &sf);
        }
        let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
        let split = [(dy, per_out(s)), (w, 0), (dx, per_in(s)), (dx, per_in(s))];
        self.per_images("conv_backward_data", s.batch, &split, |r, v| {
            let s = ConvShape { batch: r.count, ..*s };
            for ph in Phase::all(&s) {
                let n = s.batch * ph.qh * ph.qw;
                self.conv_gemm(Kernel::ConvBackwardData, &s, cg, n, mg * ph.nky * ph.nkx, [v[0], v[1], v[2], v[3]], false, Some(ph), None);
            }
        });
    }

    pub(super) fn conv_backward_weights_into(&self, x: &GpuBuf, dy: &GpuBuf, dw: &GpuBuf, s: &ConvShape) {
        self.check_conv(s);
        super::ops::check("conv_backward_weights x", x, s.input_len());
        super::ops::check("conv_backward_weights dy", dy, s.output_len());
        super::ops::check("conv_backward_weights dw", dw, s.weight_len());
        let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
        let (m, n) = (mg, cg * s.size * s.size);
        let ohw = s.out_h * s.out_w;
        if m == 0 || n == 0 || s.batch * ohw == 0 {
            return;
        }
        let (kernel, t, reduce_tile) = if let Some(tiling) = self.mixed_gemms() {
            (Kernel::ConvBackwardWeightsMixed, deepen(mixed_weight_tile(m, n, s.size), tiling, GemmKind::BackwardWeights), specialise(WEIGHT_TILES[0], s.size))
        } else {
            let t = self.fp32_weight_tile(s);
            (Kernel::ConvBackwardWeights, t, t)
        };
        let m_tiles = m.div_ceil(t.bm());
        let n_tiles = n.div_ceil(t.bn());
        let ranges = self.image_ranges("conv_backward_weights", s.batch, &[(x, per_in(s)), (dy, per_out(s))], 1);
        if self.col_path(s) {
            let ranges = self.col_ranges(s, &ranges);
            return self.conv_backward_weights_ranges(x, dy, dw, s, (kernel, t, reduce_tile), &ranges, true);
        }
        if ranges.len() > 1 {
            return self.conv_backward_weights_ranges(x, dy, dw, s, (kernel, t, reduce_tile), &ranges, false);
        }
        let (kchunk, splits) = self.weight_splits(s, t);
        let max = self.limits.max_compute_workgroups_per_dimension as usize;
        assert!(n_tiles <= max && m_tiles * s.groups <= max, "gpu conv: shape {s:?} too large for one dispatch");
        let scratch = self.splitk(if splits > 1 { splits * s.weight_len() } else { 1 });
        let bufs = [x, dy, dw, &scratch, x];
        let mut p = self.conv_params(s, m, n, s.batch * ohw, t, [x, dy, dw, &scratch]);
        p.kchunk = u(kchunk);
        p.splits = u(splits);
        let grid = [n_tiles as u32, (m_tiles * s.groups) as u32, splits as u32];
        let work = gemm_work(s, m, n, s.batch * ohw);
        let mut rec = self.lock();
        self.dispatch_locked(&mut rec, kernel, t, &bufs, &p, grid, work);
        if splits > 1 {
            let groups = self.grid((s.weight_len() as u64).div_ceil(256));
            let work = Work::elementwise(s.weight_len(), splits + 1, 1, splits);
            self.dispatch_locked(&mut rec, Kernel::ConvSplitkReduce, reduce_tile, &bufs, &p, groups, work);
        }
    }
}

/// Floats of one image of the convolution's input and output.
pub(super) fn per_in(s: &ConvShape) -> usize {
    s.c * s.h * s.w
}
pub(super) fn per_out(s: &ConvShape) -> usize {
    s.filters * s.out_h * s.out_w
}

impl GpuBackend {
    /// K tiles per split and the number of splits of a backward-weights GEMM of the whole batch
    /// with tile `t`. K is (image, pixel tile) pairs; few output tiles and a long K (early layers:
    /// few weights, many pixels) would leave the GPU idle, so K is split into per-split partials
    /// that conv_splitk_reduce adds up in split order.
    fn weight_splits(&self, s: &ConvShape, t: GemmTile) -> (usize, usize) {
        let (m, n) = (s.filters / s.groups, s.c / s.groups * s.size * s.size);
        let groups = m.div_ceil(t.bm()) * n.div_ceil(t.bn()) * s.groups;
        let k_tiles = s.batch * (s.out_h * s.out_w).div_ceil(t.bk as usize);
        let want = SPLITK_TARGET_GROUPS.div_ceil(groups);
        let by_k = (k_tiles / SPLITK_MIN_TILES).max(1);
        let by_mem = (self.splitk_max_floats() / s.weight_len().max(1)).max(1);
        let splits = want.min(by_k).min(by_mem).clamp(1, 65_535);
        let kchunk = k_tiles.div_ceil(splits);
        (kchunk, k_tiles.div_ceil(kchunk))
    }

    /// Most floats of split-K partials: the scratch must also bind whole.
    fn splitk_max_floats(&self) -> usize {
        SPLITK_MAX_SCRATCH.min((self.limits.max_storage_buffer_binding_size / 4) as usize)
    }

    /// Backward weights of a batch whose x or dy is larger than one binding: each range of
    /// images writes the partials of its own K splits (split-K over the range's pixel tiles),
    /// and one reduce adds every split into dw in order (fixed order: reruns give the same bits).
    /// `kt`: the GEMM kernel, its tile, and the tile the reduce is built with.
    /// `col`: each range's B comes from its f16 im2col matrix (gpu/conv_col.rs), made first.
    fn conv_backward_weights_ranges(
        &self, x: &GpuBuf, dy: &GpuBuf, dw: &GpuBuf, s: &ConvShape, kt: (Kernel, GemmTile, GemmTile), ranges: &[Images], col: bool,
    ) {
        let (kernel, t, reduce_tile) = kt;
        let (cg, mg) = (s.c / s.groups, s.filters / s.groups);
        let (m, n) = (mg, cg * s.size * s.size);
        let tiles_per_image = (s.out_h * s.out_w).div_ceil(t.bk as usize);
        let (m_tiles, n_tiles) = (m.div_ceil(t.bm()), n.div_ceil(t.bn()));
        let wl = s.weight_len();
        // Splits of every range share one K chunk: as many as the scratch allows, at most the
        // rule's target, at least one per range.
        let by_mem = (self.splitk_max_floats() / wl.max(1)).max(1);
        let largest = ranges.iter().map(|r| r.count).max().unwrap_or(1) * tiles_per_image;
        let per_range = (by_mem / ranges.len()).clamp(1, SPLITK_TARGET_GROUPS.div_ceil(m_tiles * n_tiles * s.groups));
        let kchunk = largest.div_ceil(per_range).max(1);
        let splits: Vec<usize> = ranges.iter().map(|r| (r.count * tiles_per_image).div_ceil(kchunk)).collect();
        let total: usize = splits.iter().sum();
        assert!(
            total * wl <= self.splitk_max_floats(),
            "gpu conv_backward_weights: {} partial weight sets of {wl} floats exceed one binding; lower width/height",
            total
        );
        let max = self.limits.max_compute_workgroups_per_dimension as usize;
        assert!(n_tiles <= max && m_tiles * s.groups <= max, "gpu conv: shape {s:?} too large for one dispatch");
        let scratch = self.splitk(total * wl);
        let mut first = 0;
        for (r, &k) in ranges.iter().zip(&splits) {
            let sub = ConvShape { batch: r.count, ..*s };
            let (xs, dys) = (images(x, per_in(s), *r), images(dy, per_out(s), *r));
            let cm = col.then(|| self.im2col_f16(&xs, &sub));
            let part = super::buffers::view(&scratch, first * wl, k * wl);
            let mut p = self.conv_params(&sub, m, n, sub.batch * sub.out_h * sub.out_w, t, [&xs, &dys, dw, &part]);
            // splits > 1 makes the kernel write partials (even for a range of one split).
            p.kchunk = u(kchunk);
            p.splits = u(k.max(2));
            if let Some(c) = &cm {
                c.set_params(&mut p);
            }
            let grid = [n_tiles as u32, (m_tiles * s.groups) as u32, k as u32];
            let work = gemm_work(s, m, n, sub.batch * sub.out_h * sub.out_w);
            let bufs = [&xs, &dys, dw, &part, cm.as_ref().map_or(&xs, |c| &c.buf)];
            self.dispatch_locked(&mut self.lock(), kernel, t, &bufs, &p, grid, work);
            first += k;
        }
        let mut rec = self.lock();
        let bufs = [x, dy, dw, &scratch];
        let p = ConvP { o3: off(dw), o4: off(&scratch), splits: u(total), total: u(wl), ..Default::default() };
        let groups = self.grid((wl as u64).div_ceil(256));
        let work = Work::elementwise(wl, total + 1, 1, total);
        // The reduce reads only dw and the partials; x and dy stand in for bindings it ignores.
        let (xs, dys) = (images(x, per_in(s), ranges[0]), images(dy, per_out(s), ranges[0]));
        let bufs = [&xs, &dys, bufs[2], bufs[3], &xs];
        self.dispatch_locked(&mut rec, Kernel::ConvSplitkReduce, reduce_tile, &bufs, &p, groups, work);
    }
}
