//! Shader registry and pipeline cache.
//!
//! Every kernel binds, in group 0: binding 0 = its params block (uniform, dynamic offset into the
//! params arena), bindings 1..=n = whole storage buffers (read_write, so views of one storage may
//! be bound several times in a dispatch). A kernel's pipeline layout depends only on n, so layouts
//! are shared.
//!
//! A module's source is a generated preamble followed by its `.wgsl` file. The preamble carries the
//! constants WGSL shares with Rust (activation codes, batch-norm backward forms, IoU codes) and, for
//! the convolution GEMMs (conv, conv_mixed), the tile shape of the variant being built ([`GemmTile`]), so the
//! compiler sees tile sizes and the kernel size as constants. Modules and pipelines are built
//! lazily, once per (kernel, variant), and cached for the backend's lifetime.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::shapes::{Activation, BnBackward, CostKind, IouLoss, SECRET_NUM, SOFTMAX_MIN_PROB};
use crate::yolo_stats as ys;

/// Size of one params slot; also the bound size of the uniform block. Every params record must
/// fit (checked by the layout test in params.rs).
pub(crate) const PARAMS_BYTES: u64 = 256;
/// Most storage buffers any kernel binds (bn_normalize: 8, wgpu's default per-stage limit).
pub(crate) const MAX_BUFFERS: usize = 8;

/// WGSL sources, included at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Module {
    Blas,
    Conv,
    Bias,
    Batchnorm,
    Activation,
    Pool,
    Resample,
    Route,
    Dropout,
    Optim,
    Reduce,
    Yolo,
    Softmax,
    Cost,
    Half,
    /// Mixed precision's conv GEMMs on cooperative matrices: built only on devices with f16 and
    /// cooperative matrices (`GpuBackend::mixed_gemm`).
    ConvMixed,
}

pub(crate) const MODULES: [Module; 16] = [
    Module::Blas,
    Module::Conv,
    Module::Bias,
    Module::Batchnorm,
    Module::Activation,
    Module::Pool,
    Module::Resample,
    Module::Route,
    Module::Dropout,
    Module::Optim,
    Module::Reduce,
    Module::Yolo,
    Module::Softmax,
    Module::Cost,
    Module::Half,
    Module::ConvMixed,
];

impl Module {
    fn file(self) -> &'static str {
        match self {
            Module::Blas => include_str!("../../../shaders-wgsl/blas.wgsl"),
            Module::Conv => include_str!("../../../shaders-wgsl/conv.wgsl"),
            Module::Bias => include_str!("../../../shaders-wgsl/bias.wgsl"),
            Module::Batchnorm => include_str!("../../../shaders-wgsl/batchnorm.wgsl"),
            Module::Activation => include_str!("../../../shaders-wgsl/activation.wgsl"),
            Module::Pool => include_str!("../../../shaders-wgsl/pool.wgsl"),
            Module::Resample => include_str!("../../../shaders-wgsl/resample.wgsl"),
            Module::Route => include_str!("../../../shaders-wgsl/route.wgsl"),
            Module::Dropout => include_str!("../../../shaders-wgsl/dropout.wgsl"),
            Module::Optim => include_str!("../../../shaders-wgsl/optim.wgsl"),
            Module::Reduce => include_str!("../../../shaders-wgsl/reduce.wgsl"),
            Module::Yolo => include_str!("../../../shaders-wgsl/yolo.wgsl"),
            Module::Softmax => include_str!("../../../shaders-wgsl/softmax.wgsl"),
            Module::Cost => include_str!("../../../shaders-wgsl/cost.wgsl"),
            Module::Half => include_str!("../../../shaders-wgsl/half.wgsl"),
            Module::ConvMixed => include_str!("../../../shaders-wgsl/conv_mixed.wgsl"),
        }
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Module::Blas => "blas",
            Module::Conv => "conv",
            Module::Bias => "bias",
            Module::Batchnorm => "batchnorm",
            Module::Activation => "activation",
            Module::Pool => "pool",
            Module::Resample => "resample",
            Module::Route => "route",
            Module::Dropout => "dropout",
            Module::Optim => "optim",
            Module::Reduce => "reduce",
            Module::Yolo => "yolo",
            Module::Softmax => "softmax",
            Module::Cost => "cost",
            Module::Half => "half",
            Module::ConvMixed => "conv_mixed",
        }
    }

    /// The module whose params record this module's kernels take (conv_mixed shares conv's
    /// `struct P`: both include include/conv_gather.wgsl).
    pub(crate) fn params_module(self) -> Module {
        match self {
            Module::ConvMixed => Module::Conv,
            m => m,
        }
    }

    /// Built per GEMM tile (the preamble carries the tile's constants).
    pub(crate) fn tiled(self) -> bool {
        matches!(self, Module::Conv | Module::ConvMixed)
    }

    /// Needs device features beyond wgpu's defaults (f16, cooperative matrices): never built
    /// ahead of use, only where the device has them.
    pub(crate) fn needs_features(self) -> bool {
        self == Module::ConvMixed
    }

    /// Shared WGSL this module is built with (shaders-wgsl/include/).
    fn includes(self) -> &'static [&'static str] {
        const ACT: &str = include_str!("../../../shaders-wgsl/include/act.wgsl");
        const CONV_GATHER: &str = include_str!("../../../shaders-wgsl/include/conv_gather.wgsl");
        const HALF: &str = include_str!("../../../shaders-wgsl/include/half.wgsl");
        const WIDE: &str = include_str!("../../../shaders-wgsl/include/wide.wgsl");
        match self {
            Module::Conv | Module::ConvMixed => &[HALF, CONV_GATHER],
            Module::Activation => &[ACT],
            Module::Batchnorm => &[ACT, REDUCE, HALF],
            Module::Half => &[HALF],
            Module::Blas => &[WIDE],
            Module::Route => &[REDUCE, WIDE],
            Module::Bias | Module::Pool | Module::Softmax | Module::Cost => &[REDUCE],
            _ => &[],
        }
    }

    /// The full WGSL source of this module built for `tile` (ignored by modules without tiles):
    /// the generated preamble, the includes, then the module's file.
    /// A file's `enable` directives go first: WGSL wants them before any declaration.
    pub(crate) fn source(self, tile: GemmTile) -> String {
        self.source_for(tile, false, DEFAULT_WIDE, 0, ACT_ANY)
    }

    /// The source for a device: `serial_trees` on CPU adapters (include/reduce.wgsl), `wide`
    /// values per invocation of the wide elementwise kernels (include/wide.wgsl).
    /// `act_only`: the one activation code the kernels applying one are built for (ACT_ANY: the
    /// one in their params; include/act.wgsl).
    pub(crate) fn source_for(self, tile: GemmTile, serial_trees: bool, wide: u32, lanes: u32, act_only: u32) -> String {
        let (enables, rest): (Vec<&str>, Vec<&str>) = self.file().lines().partition(|l| l.starts_with("enable "));
        let mut s = String::new();
        for e in enables {
            s += e;
            s += "\n";
        }
        s += &preamble();
        let _ = writeln!(s, "const SERIAL_TREES: bool = {serial_trees};");
        let _ = writeln!(s, "const RED_WG: u32 = {}u;", if serial_trees { 64 } else { 256 });
        let _ = writeln!(s, "const WIDE: u32 = {wide}u;");
        let _ = writeln!(s, "const ACT_ONLY: u32 = {act_only}u;");
        if self.tiled() {
            s += &tile.constants();
        }
        for inc in self.includes() {
            s += inc;
        }
        if self.includes().contains(&REDUCE) {
            s += &unrolled_tree("red_tree", "red", 256);
            s += &unrolled_tree("red2_tree", "red2", 256);
            s += &unrolled_tree("red_tree64", "red", 64);
        }
        if self == Module::Conv {
            // The inner product: shared through subgroup lanes where this tile can
            // (GemmTile::shares_lanes), else every invocation reads its own.
            if tile.shares_lanes(lanes) {
                let _ = writeln!(s, "const LANES: u32 = {lanes}u;");
                s += include_str!("../../../shaders-wgsl/include/tile_lanes.wgsl");
                s += &tile.fma_shared(lanes);
            } else {
                s += include_str!("../../../shaders-wgsl/include/tile_fma.wgsl");
            }
        }
        for l in rest {
            s += l;
            s += "\n";
        }
        s
    }

    /// The source with the default tile (what tests parse).
    pub(crate) fn default_source(self) -> String {
        self.source(self.default_tile())
    }

    fn default_tile(self) -> GemmTile {
        if self == Module::ConvMixed { super::conv::MIXED_DEFAULT_TILE } else { GemmTile::DEFAULT }
    }
}

/// include/reduce.wgsl's tree over the first `n` values of the workgroup array `arr` (256, or 64
/// for the levels below 64 of it), unrolled: at each level s = n/2, …, 1, value i (i < s) adds
/// value i + s, every index a constant.
const REDUCE: &str = include_str!("../../../shaders-wgsl/include/reduce.wgsl");

fn unrolled_tree(name: &str, arr: &str, n: usize) -> String {
    let mut s = format!("fn {name}() -> f32 {{\n");
    for i in 0..n {
        let _ = writeln!(s, "    let l{n}_{i} = {arr}[{i}];");
    }
    let mut level = n;
    while level > 1 {
        let half = level / 2;
        for i in 0..half {
            let _ = writeln!(s, "    let l{half}_{i} = l{level}_{i} + l{level}_{};", i + half);
        }
        level = half;
    }
    s += "    return l1_0;\n}\n";
    s
}

/// `act_only` of a module built for whatever activation its params name.
pub(crate) const ACT_ANY: u32 = u32::MAX;

/// Constants shared by Rust and every WGSL module.
fn preamble() -> String {
    let mut s = String::from("// ---- generated by engine/src/gpu/pipelines.rs from the Rust definitions ----\n");
    for a in Activation::ALL {
        let _ = writeln!(s, "const ACT_{}: u32 = {}u;", a.darknet_name().to_uppercase(), a.code());
    }
    let _ = writeln!(s, "const ACT_ANY: u32 = {ACT_ANY}u;");
    for (name, form) in [("EXACT", BnBackward::Exact), ("DARKNET_CPU", BnBackward::DarknetCpu)] {
        let _ = writeln!(s, "const BN_{name}: u32 = {}u;", bn_form_code(form));
    }
    for k in [IouLoss::Mse, IouLoss::Iou, IouLoss::Giou, IouLoss::Diou, IouLoss::Ciou] {
        let _ = writeln!(s, "const IOU_{}: u32 = {}u;", k.darknet_name().to_uppercase(), iou_code(k));
    }
    for k in [CostKind::Sse, CostKind::Masked, CostKind::Smooth] {
        let _ = writeln!(s, "const COST_{}: u32 = {}u;", k.darknet_name().to_uppercase(), k.code());
    }
    for (name, slot) in [("COST", ys::COST), ("CLASS_LOSS", ys::CLASS_LOSS), ("CLS_ONLY_LOSS", ys::CLS_ONLY_LOSS), ("LEN", ys::STATS_LEN)] {
        let _ = writeln!(s, "const STATS_{name}: u32 = {slot}u;");
    }
    let _ = writeln!(s, "const SECRET_NUM: f32 = {:?};", SECRET_NUM);
    let _ = writeln!(s, "const MIN_PROB: f32 = {:e};", SOFTMAX_MIN_PROB);
    s += "// ---- end of generated constants ----\n";
    s
}

/// Code of a batch-norm backward form in kernel parameters.
pub(crate) fn bn_form_code(form: BnBackward) -> u32 {
    match form {
        BnBackward::Exact => 0,
        BnBackward::DarknetCpu => 1,
    }
}

/// Code of an IoU kind in kernel parameters.
pub(crate) fn iou_code(k: IouLoss) -> u32 {
    match k {
        IouLoss::Mse => 0,
        IouLoss::Iou => 1,
        IouLoss::Giou => 2,
        IouLoss::Diou => 3,
        IouLoss::Ciou => 4,
    }
}

/// Tile shape of a convolution GEMM variant: a workgroup of `ty × tx` (= 256) invocations, each
/// computing `tm × tn` outputs, so one workgroup owns a `(ty·tm) × (tx·tn)` block of C and walks
/// K `bk` at a time. `ks` is the kernel size the index arithmetic is specialised for (0 = any,
/// read from the params at run time). `stages`: how many K tiles conv_mixed.wgsl keeps in
/// workgroup memory at once (1, or 2 to alternate and save a barrier; conv.wgsl has 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmTile {
    pub ty: u32,
    pub tx: u32,
    pub tm: u32,
    pub tn: u32,
    pub bk: u32,
    pub ks: u32,
    pub stages: u32,
    /// f16 values conv_mixed.wgsl adds to the stride of each staged row of A and B in workgroup
    /// memory (0, or 8 so that a matrix load's rows fall in different memory banks).
    pub pad: u32,
}

impl std::fmt::Display for GemmTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}k{}", self.bm(), self.bn(), self.bk)?;
        if self.ks != 0 {
            write!(f, "s{}", self.ks)?;
        }
        if self.stages != 1 {
            write!(f, "x{}", self.stages)?;
        }
        if self.pad != 0 {
            write!(f, "p{}", self.pad)?;
        }
        Ok(())
    }
}

impl GemmTile {
    /// The tile non-GEMM modules are built with (their sources ignore it) and tests parse.
    pub(crate) const DEFAULT: GemmTile = GemmTile { ty: 16, tx: 16, tm: 4, tn: 8, bk: 8, ks: 0, stages: 1, pad: 0 };

    /// Rows and columns of C one workgroup owns.
    pub fn bm(self) -> usize {
        (self.ty * self.tm) as usize
    }
    pub fn bn(self) -> usize {
        (self.tx * self.tn) as usize
    }

    /// Workgroup memory conv_mixed.wgsl declares for this tile: `stages` staged K tiles of A
    /// (rows of BK + pad) and B (BK rows of BN + pad, or BN columns of BK + pad: room for the
    /// larger) in f16, and 8 KiB of f32 staging for the write-out (a test checks this against
    /// naga).
    pub fn mixed_workgroup_bytes(self) -> u32 {
        let (bm, bn) = (self.ty * self.tm, self.tx * self.tn);
        let a = bm * (self.bk + self.pad);
        let b = self.bk * bn + self.pad * self.bk.max(bn);
        self.stages * (a + b) * 2 + 8192
    }

    /// Whether conv.wgsl built for this tile shares A's rows through subgroups of `lanes`
    /// invocations (include/tile_lanes.wgsl; 0: subgroups are not used): a subgroup must lie in
    /// one row of the TY × TX invocations and hold at least a quarter of the TM rows' loads.
    pub fn shares_lanes(self, lanes: u32) -> bool {
        lanes > 0 && self.tx.is_multiple_of(lanes) && self.tm <= 4 * lanes
    }

    /// include/tile_lanes.wgsl's `fma_shared`: row ri of the TM rows gets the value lane
    /// ri % lanes read, mine[ri / lanes], through a shuffle from that (constant) lane.
    fn fma_shared(self, lanes: u32) -> String {
        let mut s = String::from("fn fma_shared(mine: vec4<f32>, b: array<vec4<f32>, TN4>) {\n");
        for ri in 0..self.tm {
            let c = ["x", "y", "z", "w"][(ri / lanes) as usize];
            let _ = writeln!(s, "    row_fma({ri}u, subgroupShuffle(mine.{c}, {}u), b);", ri % lanes);
        }
        s += "}\nfn acc_at(q: u32) -> vec4<f32> {\n    var v = acc[0];\n";
        for q in 1..self.tm * self.tn / 4 {
            let _ = writeln!(s, "    v = select(v, acc[{q}], q == {q}u);");
        }
        s += "    return v;\n}\n";
        s
    }

    fn constants(self) -> String {
        format!(
            "const TY: u32 = {}u;\nconst TX: u32 = {}u;\nconst TM: u32 = {}u;\nconst TN: u32 = {}u;\nconst BK: u32 = {}u;\nconst KS: u32 = {}u;\nconst STAGES: u32 = {}u;\nconst PAD: u32 = {}u;\n",
            self.ty, self.tx, self.tm, self.tn, self.bk, self.ks, self.stages, self.pad
        )
    }
}

macro_rules! kernels {
    ($($k:ident => ($m:ident, $entry:literal, $n:literal)),* $(,)?) => {
        /// One entry point: its module, WGSL name and number of storage bindings.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(clippy::enum_variant_names)]
        pub(crate) enum Kernel { $($k),* }

        pub(crate) const KERNELS: &[Kernel] = &[$(Kernel::$k),*];

        impl Kernel {
            pub(crate) fn module(self) -> Module {
                match self { $(Kernel::$k => Module::$m),* }
            }
            pub(crate) fn entry(self) -> &'static str {
                match self { $(Kernel::$k => $entry),* }
            }
            pub(crate) fn buffers(self) -> usize {
                match self { $(Kernel::$k => $n),* }
            }
        }
    };
}

impl Kernel {
    /// Applies the activation its params name (include/act.wgsl): built per activation where
    /// the device specialises them (`CompileOptions::act_variants`).
    pub(crate) fn applies_activation(self) -> bool {
        matches!(
            self,
            Kernel::ActivationForward | Kernel::ActivationBackward | Kernel::BnNormalize | Kernel::BnBackwardPartials | Kernel::BnBackwardApply
        )
    }

    /// Handles WIDE values per invocation (include/wide.wgsl): dispatched with WIDE times fewer
    /// workgroups.
    pub(crate) fn wide(self) -> bool {
        matches!(self, Kernel::Fill | Kernel::Copy | Kernel::CopyIfFlagged | Kernel::CopySlices)
    }
}

kernels! {
    Fill => (Blas, "fill", 1),
    Copy => (Blas, "copy", 2),
    CopyIfFlagged => (Blas, "copy_if_flagged", 3),
    Axpy => (Blas, "axpy", 2),
    Scal => (Blas, "scal", 1),
    RoundF16 => (Half, "round_f16", 2),
    UnpackF16 => (Half, "unpack_f16", 2),
    AddForward => (Blas, "add_forward", 3),
    MulForward => (Blas, "mul_forward", 3),
    DivForward => (Blas, "div_forward", 3),
    ExpForward => (Blas, "exp_forward", 2),
    LogForward => (Blas, "log_forward", 2),
    PowForward => (Blas, "pow_forward", 2),
    MulBackward => (Blas, "mul_backward", 5),
    DivBackward => (Blas, "div_backward", 5),
    ExpBackward => (Blas, "exp_backward", 3),
    LogBackward => (Blas, "log_backward", 3),
    PowBackward => (Blas, "pow_backward", 3),
    ConvForward => (Conv, "conv_forward", 5),
    ConvBackwardData => (Conv, "conv_backward_data", 5),
    ConvBackwardWeights => (Conv, "conv_backward_weights", 5),
    ConvSplitkReduce => (Conv, "conv_splitk_reduce", 5),
    ConvIm2colF16 => (Conv, "conv_im2col_f16", 5),
    ConvPackWeightsF16 => (Conv, "conv_pack_weights_f16", 5),
    ConvForwardMixed => (ConvMixed, "conv_forward_mixed", 5),
    ConvBackwardDataMixed => (ConvMixed, "conv_backward_data_mixed", 5),
    ConvBackwardWeightsMixed => (ConvMixed, "conv_backward_weights_mixed", 5),
    BiasAdd => (Bias, "bias_add", 2),
    BiasPartials => (Bias, "bias_partials", 2),
    BiasCombine => (Bias, "bias_combine", 2),
    BnPartials => (Batchnorm, "bn_partials", 2),
    BnCombine => (Batchnorm, "bn_combine", 5),
    BnStatsDarknetCpu => (Batchnorm, "bn_stats_darknet_cpu", 5),
    BnNormalize => (Batchnorm, "bn_normalize", 8),
    BnInfer => (Batchnorm, "bn_infer", 6),
    BnBackwardPartials => (Batchnorm, "bn_backward_partials", 6),
    BnBackwardCombine => (Batchnorm, "bn_backward_combine", 5),
    BnBackwardApply => (Batchnorm, "bn_backward_apply", 7),
    ActivationForward => (Activation, "activation_forward", 2),
    ActivationBackward => (Activation, "activation_backward", 4),
    MaxpoolForward => (Pool, "maxpool_forward", 2),
    MaxpoolBackward => (Pool, "maxpool_backward", 3),
    MaxpoolBackwardWindows => (Pool, "maxpool_backward_windows", 3),
    AvgpoolForward => (Pool, "avgpool_forward", 2),
    AvgpoolBackward => (Pool, "avgpool_backward", 2),
    UpsampleForward => (Resample, "upsample_forward", 2),
    UpsampleBackward => (Resample, "upsample_backward", 2),
    ReorgForward => (Resample, "reorg_forward", 2),
    ReorgBackward => (Resample, "reorg_backward", 2),
    CopySlices => (Route, "copy_slices", 2),
    ScaleChannelsForward => (Route, "scale_channels_forward", 3),
    ScaleChannelsBackward => (Route, "scale_channels_backward", 5),
    DropoutForward => (Dropout, "dropout_forward", 2),
    DropoutBackward => (Dropout, "dropout_backward", 2),
    SgdUpdate => (Optim, "sgd_update", 2),
    AdamUpdate => (Optim, "adam_update", 4),
    ReducePartial => (Reduce, "reduce_partial", 2),
    ReduceFinal => (Reduce, "reduce_final", 2),
    YoloActivate => (Yolo, "yolo_activate", 6),
    YoloNegatives => (Yolo, "yolo_negatives", 6),
    YoloPositives => (Yolo, "yolo_positives", 6),
    YoloFinish => (Yolo, "yolo_finish", 6),
    YoloStats => (Yolo, "yolo_stats", 6),
    SoftmaxForward => (Softmax, "softmax_forward", 2),
    SoftmaxLoss => (Softmax, "softmax_loss", 4),
    CostForward => (Cost, "cost_forward", 5),
}

/// Which of wgpu's shader runtime checks a module gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checks {
    /// Every check wgpu offers, on every module.
    All,
    /// The default: every check on every module except the convolution GEMMs, which keep their
    /// buffer bounds checks but drop the loop-bounding counters and the integer-division guards.
    /// The counters stop the driver from unrolling the register-blocked loops, so the
    /// accumulators spill to local memory (4x slower steps on an H100); conv.wgsl's loops are all
    /// bounded by its params and the host checks every divisor it uses is positive (conv.rs).
    Relaxed,
    /// Relaxed, without naga's index clamps: for a CPU adapter reached through Vulkan (lavapipe),
    /// where they doubled the step. The driver keeps every buffer access inside its binding
    /// (robustBufferAccess, which wgpu turns on for every Vulkan device), and the kernels index
    /// their workgroup and private arrays with values in range by construction (tile constants,
    /// invocation ids, loop counters bounded by the array lengths).
    DriverBounds,
    /// No runtime checks at all (only to measure what the checks cost: ENGINE_GPU_CHECKS=none).
    None,
}

/// How shader modules and pipelines are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CompileOptions {
    pub checks: Checks,
    /// Zero workgroup memory before each workgroup runs (WebGPU's default). Every kernel here
    /// writes its workgroup memory before reading it, so this only costs time.
    pub zero_workgroup_memory: bool,
    /// Reduction trees summed by one invocation in the tree's order (CPU adapters).
    pub serial_trees: bool,
    /// Values per invocation of the wide elementwise kernels ([`Kernel::wide`]).
    pub wide: u32,
    /// Subgroup lanes the conv GEMMs share A's rows through (0: none; CPU adapters with
    /// subgroups whose layout the backend checked, gpu/lanes.rs).
    pub lanes: u32,
    /// Kernels that apply an activation are built for each one they run (CPU adapters, where
    /// every arm of the activation switch would run otherwise; include/act.wgsl).
    pub act_variants: bool,
}

/// Values per invocation of the wide kernels on GPUs (include/wide.wgsl says what it measured).
pub(crate) const DEFAULT_WIDE: u32 = 4;
/// Most values per invocation a device may be asked for (`ENGINE_GPU_WIDE`, the selector).
pub(crate) const MAX_WIDE: u32 = 16;

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { checks: Checks::Relaxed, zero_workgroup_memory: false, serial_trees: false, wide: DEFAULT_WIDE, lanes: 0, act_variants: false }
    }
}

impl CompileOptions {
    /// The defaults for an adapter (`cpu_vulkan`: a CPU adapter through Vulkan takes
    /// `Checks::DriverBounds`), with `ENGINE_GPU_CHECKS=all|relaxed|driver|none`,
    /// `ENGINE_GPU_ZERO_WORKGROUP=1`, `ENGINE_GPU_SERIAL_TREES=0|1` and `ENGINE_GPU_WIDE=1..16`
    /// applied (for measuring what each costs only: none changes a result).
    pub(crate) fn for_adapter(cpu: bool, cpu_vulkan: bool) -> CompileOptions {
        let checks = match std::env::var("ENGINE_GPU_CHECKS").as_deref() {
            Ok("all") => Checks::All,
            Ok("relaxed") => Checks::Relaxed,
            Ok("driver") => Checks::DriverBounds,
            Ok("none") => Checks::None,
            _ if cpu_vulkan => Checks::DriverBounds,
            _ => Checks::Relaxed,
        };
        let zero_workgroup_memory = std::env::var("ENGINE_GPU_ZERO_WORKGROUP").is_ok_and(|v| v == "1");
        let serial_trees = match std::env::var("ENGINE_GPU_SERIAL_TREES").as_deref() {
            Ok("0") => false,
            Ok("1") => true,
            _ => cpu,
        };
        // CPU adapters: one value each (see DEFAULT_WIDE's file for GPUs).
        let wide = match std::env::var("ENGINE_GPU_WIDE").ok().and_then(|v| v.parse::<u32>().ok()) {
            Some(w @ 1..=MAX_WIDE) => w,
            _ if cpu => 1,
            _ => DEFAULT_WIDE,
        };
        let act_variants = match std::env::var("ENGINE_GPU_ACT_VARIANTS").as_deref() {
            Ok("0") => false,
            Ok("1") => true,
            _ => cpu,
        };
        CompileOptions { checks, zero_workgroup_memory, serial_trees, wide, lanes: 0, act_variants }
    }

    /// The checks module `m` is built with, when they are fewer than all of wgpu's.
    fn reduced_checks(self, m: Module) -> Option<wgpu::ShaderRuntimeChecks> {
        let conv = matches!(m, Module::Conv | Module::ConvMixed);
        let relaxed = wgpu::ShaderRuntimeChecks { force_loop_bounding: !conv, int_div_checks: !conv, ..wgpu::ShaderRuntimeChecks::checked() };
        match self.checks {
            Checks::All => None,
            Checks::Relaxed => conv.then_some(relaxed),
            Checks::DriverBounds => Some(wgpu::ShaderRuntimeChecks { bounds_checks: false, ..relaxed }),
            Checks::None => Some(wgpu::ShaderRuntimeChecks::unchecked()),
        }
    }
}

/// Every WGSL source the backend can build, as (name, source): each module with its default
/// variant, the convolution module with every GEMM tile the backend may choose, and the variants
/// for CPU adapters with subgroups (those use subgroup operations). For tests that
/// check every kernel translates to Metal and SPIR-V, and fits the default limits.
pub fn shader_sources() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = MODULES.iter().map(|m| (m.name().to_string(), m.default_source())).collect();
    // The CPU adapters' variant (serial reduction trees) of every module.
    for m in MODULES {
        out.push((format!("{} (serial trees, one value per invocation)", m.name()), m.source_for(m.default_tile(), true, 1, 0, ACT_ANY)));
    }
    for tile in super::conv::all_tiles() {
        out.push((format!("conv {tile:?}"), Module::Conv.source(tile)));
    }
    for tile in super::conv::all_mixed_tiles() {
        out.push((format!("conv_mixed {tile:?}"), Module::ConvMixed.source(tile)));
    }
    // CPU adapters' kernels built for one activation (here leaky, and mish: one arm each).
    for m in [Module::Activation, Module::Batchnorm] {
        for a in [Activation::Leaky, Activation::Mish] {
            out.push((format!("{} (serial trees, {} only)", m.name(), a.darknet_name()), m.source_for(m.default_tile(), true, 1, 0, a.code())));
        }
    }
    // CPU adapters with subgroups: the tiles that share A's rows through them (needs subgroup
    // operations), and the start-up check of their layout.
    for lanes in super::lanes::SIZES {
        for tile in super::conv::all_tiles().into_iter().filter(|t| t.shares_lanes(lanes)) {
            out.push((format!("conv {tile:?} (subgroups of {lanes})"), Module::Conv.source_for(tile, true, 1, lanes, ACT_ANY)));
        }
        out.push((format!("lanes_probe (subgroups of {lanes})"), super::lanes::probe_source(lanes)));
    }
    out
}

/// conv_mixed.wgsl's deeper tilings (K 32 or 64, or two stages), built only on devices that grant
/// the workgroup memory they need beyond wgpu's 16 KiB default: (name, source, bytes they need).
pub fn deep_mixed_sources() -> Vec<(String, String, u32)> {
    super::conv::all_deep_mixed_tiles()
        .into_iter()
        .map(|t| (format!("conv_mixed {t:?}"), Module::ConvMixed.source(t), t.mixed_workgroup_bytes()))
        .collect()
}

/// Every kernel's default build (none of the modules needing optional features), and the
/// kernels that apply an activation built for each of `activations` (kept as such only where
/// the device specialises them, [`Pipelines::get`]): as [`Pipelines::prepare`] takes them.
pub(crate) fn default_keys(activations: &[Activation]) -> Vec<(Kernel, GemmTile, u32)> {
    let mut keys = Vec::new();
    for &k in KERNELS.iter().filter(|k| !k.module().needs_features()) {
        keys.push((k, GemmTile::DEFAULT, ACT_ANY));
        if k.applies_activation() {
            keys.extend(activations.iter().map(|a| (k, GemmTile::DEFAULT, a.code())));
        }
    }
    keys
}

/// Bind group layouts (one per storage-buffer count), pipeline layouts, modules and pipelines.
pub(crate) struct Pipelines {
    pub(crate) bind_layouts: Vec<wgpu::BindGroupLayout>,
    pipeline_layouts: Vec<wgpu::PipelineLayout>,
    options: CompileOptions,
    modules: Mutex<HashMap<(Module, GemmTile, u32), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(Kernel, GemmTile, u32), wgpu::ComputePipeline>>,
}

impl Pipelines {
    /// Values per invocation of the wide kernels ([`Kernel::wide`]) in this device's modules.
    pub(crate) fn wide(&self) -> u32 {
        self.options.wide
    }

    /// Subgroup lanes the conv GEMMs share A's rows through (0: none).
    pub(crate) fn lanes(&self) -> u32 {
        self.options.lanes
    }

    pub(crate) fn new(device: &wgpu::Device, options: CompileOptions) -> Pipelines {
        let mut bind_layouts = Vec::new();
        let mut pipeline_layouts = Vec::new();
        for n in 0..=MAX_BUFFERS {
            let mut entries = vec![wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: wgpu::BufferSize::new(PARAMS_BYTES),
                },
                count: None,
            }];
            for b in 1..=n as u32 {
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: b,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                });
            }
            let label = format!("bgl{n}");
            let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&label),
                entries: &entries,
            });
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
            bind_layouts.push(bgl);
            pipeline_layouts.push(pl);
        }
        Pipelines {
            bind_layouts,
            pipeline_layouts,
            options,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    fn module(&self, device: &wgpu::Device, m: Module, tile: GemmTile, act_only: u32) -> wgpu::ShaderModule {
        let tile = if m.tiled() { tile } else { GemmTile::DEFAULT };
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        modules
            .entry((m, tile, act_only))
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(m.name()),
                    source: wgpu::ShaderSource::Wgsl(m.source_for(tile, self.options.serial_trees, self.options.wide, self.options.lanes, act_only).into()),
                };
                if let Some(checks) = self.options.reduced_checks(m) {
                    // SAFETY: Checks::Relaxed drops only the loop bounding and the division
                    // guards of conv.wgsl, whose loops run over ranges fixed by its params and
                    // whose divisors the host asserts positive (conv.rs, `check_conv` and the
                    // phase filter); buffer bounds checks stay. Checks::DriverBounds also drops
                    // naga's index clamps, only on Vulkan, whose robust buffer access keeps
                    // buffer accesses in bounds, with array indices in range by construction
                    // (see Checks). Checks::None is a measuring aid.
                    unsafe { device.create_shader_module_trusted(desc, checks) }
                } else {
                    device.create_shader_module(desc)
                }
            })
            .clone()
    }

    /// The pipeline of `k` built for `tile` and for activation `act` (a code, or ACT_ANY; only
    /// kept where the device specialises activations and `k` applies one), compiled on first use.
    pub(crate) fn get(&self, device: &wgpu::Device, k: Kernel, tile: GemmTile, act: u32) -> wgpu::ComputePipeline {
        let tile = if k.module().tiled() { tile } else { GemmTile::DEFAULT };
        let act = if self.options.act_variants && k.applies_activation() { act } else { ACT_ANY };
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).get(&(k, tile, act)) {
            return p.clone();
        }
        let module = self.module(device, k.module(), tile, act);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.entry()),
            layout: Some(&self.pipeline_layouts[k.buffers()]),
            module: &module,
            entry_point: Some(k.entry()),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                zero_initialize_workgroup_memory: self.options.zero_workgroup_memory,
            },
            cache: None,
        });
        self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).insert((k, tile, act), pipeline.clone());
        pipeline
    }

    /// Makes the pipelines of `keys` (kernel, tile, activation as [`Pipelines::get`] takes them)
    /// that do not exist yet, on as many threads as the machine has cores (at most 8):
    /// pipelines are independent, and a driver that compiles on the CPU (lavapipe) compiles
    /// them in parallel.
    pub(crate) fn prepare(&self, device: &wgpu::Device, keys: &[(Kernel, GemmTile, u32)]) {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(keys.len());
        std::thread::scope(|scope| {
            for i in 0..threads {
                scope.spawn(move || {
                    for &(k, tile, act) in keys.iter().skip(i).step_by(threads) {
                        self.get(device, k, tile, act);
                    }
                });
            }
        });
    }

    /// Pipelines made so far (for the test that preparing covers a step).
    pub(crate) fn count(&self) -> usize {
        self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Compiles every pipeline with its default variant now (so the first training step is not
    /// slowed by compilation); GEMM variants, and modules needing optional features, compile on
    /// first use.
    pub(crate) fn warm_up(&self, device: &wgpu::Device) {
        self.prepare(device, &default_keys(&[]));
    }
}
