//! Adapter listing and selection, and device creation with the limits the kernels need.

use std::fmt;

/// What a user needs to know about one adapter to choose it (`--list-adapters`).
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterInfoRecord {
    /// Position in [`list_adapters`]'s order; [`AdapterSelector::index`] refers to it.
    pub index: usize,
    pub name: String,
    /// "vulkan", "metal", "dx12", "gl", ...
    pub backend: String,
    /// "discrete", "integrated", "virtual", "cpu", "other".
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    /// Optional features the adapter offers (Debug spelling of `wgpu::Features`).
    pub features: String,
    /// Runs WGSL compute shaders (GL adapters may not).
    pub compute_capable: bool,
}

impl AdapterInfoRecord {
    /// The most floats one buffer may hold on this adapter.
    pub fn max_buffer_floats(&self) -> usize {
        buffer_floats(self.max_buffer_size)
    }
    /// The most floats one kernel binds at once on this adapter (see [`binding_floats`]).
    pub fn max_binding_floats(&self) -> usize {
        let limits = wgpu::Limits { max_storage_buffer_binding_size: self.max_storage_buffer_binding_size, ..Default::default() };
        binding_floats(&limits)
    }
}

/// Floats one buffer may hold under this byte limit (views index in u32).
pub(crate) fn buffer_floats(max_buffer_bytes: u64) -> usize {
    usize::try_from(max_buffer_bytes / 4).unwrap_or(usize::MAX).min(u32::MAX as usize)
}

/// Floats of the largest view an op binds at once: a binding less one offset alignment (a
/// window starts at the view's aligned-down offset).
pub(crate) fn binding_floats(limits: &wgpu::Limits) -> usize {
    let align = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
    usize::try_from(limits.max_storage_buffer_binding_size.saturating_sub(align) / 4).unwrap_or(usize::MAX)
}

impl fmt::Display for AdapterInfoRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} ({}, {}, driver {} {}) max_buffer {} MiB, max_storage_binding {} MiB{}",
            self.index,
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.driver_info,
            self.max_buffer_size >> 20,
            self.max_storage_buffer_binding_size >> 20,
            if self.compute_capable { "" } else { " (no compute shaders)" }
        )
    }
}

/// How to pick an adapter. Fields left `None` are taken from the environment variables wgpu users
/// know: `WGPU_BACKEND` (e.g. "vulkan", "metal"), `WGPU_ADAPTER_NAME` (case-insensitive substring),
/// `WGPU_POWER_PREF` ("low", "high", "none"); `WGPU_ADAPTER_INDEX` selects by list position.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdapterSelector {
    pub index: Option<usize>,
    pub name: Option<String>,
    pub backends: Option<wgpu::Backends>,
    pub power: Option<wgpu::PowerPreference>,
    /// Lowers the storage-binding limit the backend works with to at most this many bytes (never
    /// raises it): for tests of large tensors bound in chunks on any adapter. Not read from the
    /// environment.
    pub max_binding_bytes: Option<u64>,
    /// Whether reduction trees are summed by one invocation (the default on CPU adapters, where
    /// it is faster; the same sums either way): for the test that both forms agree bit for bit.
    /// Not read from the environment (`ENGINE_GPU_SERIAL_TREES` is, below this).
    pub serial_trees: Option<bool>,
    /// Values per invocation of the wide elementwise kernels (1–16; the same results for any):
    /// for the test that they agree bit for bit. Not read from the environment
    /// (`ENGINE_GPU_WIDE` is, below this).
    pub wide: Option<u32>,
    /// Whether the conv GEMMs may share A's rows through subgroup lanes where the adapter allows
    /// (CPU adapters; the same bits either way): for the test that both agree. Not read from the
    /// environment (`ENGINE_GPU_LANES` is, below this).
    pub lanes: Option<bool>,
    /// Whether kernels that apply an activation are built for each one (the default on CPU
    /// adapters; the same bits either way): for the test that both agree. Not read from the
    /// environment (`ENGINE_GPU_ACT_VARIANTS` is, below this).
    pub act_variants: Option<bool>,
}

impl AdapterSelector {
    pub fn by_index(index: usize) -> Self {
        AdapterSelector { index: Some(index), ..Default::default() }
    }
    pub fn by_name(name: &str) -> Self {
        AdapterSelector { name: Some(name.to_string()), ..Default::default() }
    }
    pub fn by_backend(backends: wgpu::Backends) -> Self {
        AdapterSelector { backends: Some(backends), ..Default::default() }
    }

    /// Fills unset fields from the environment.
    pub fn with_env(mut self) -> Self {
        if self.backends.is_none() {
            self.backends = wgpu::Backends::from_env();
        }
        if self.name.is_none() {
            self.name = std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty());
        }
        if self.power.is_none() {
            self.power = wgpu::PowerPreference::from_env();
        }
        if self.index.is_none() {
            self.index = std::env::var("WGPU_ADAPTER_INDEX").ok().and_then(|s| s.trim().parse().ok());
        }
        self
    }
}

pub const INSTALL_HINT: &str = "install a GPU driver with Vulkan or Metal support; on Linux without a GPU, \
`apt-get install mesa-vulkan-drivers libvulkan1` provides the lavapipe software adapter";

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found (backends {backends}): {hint}")]
    NoAdapter { backends: String, hint: &'static str },
    #[error("adapter index {index} out of range: {count} adapter(s) found (see the adapter list)")]
    BadIndex { index: usize, count: usize },
    #[error("no adapter name contains {name:?}; available: {available}")]
    NoNameMatch { name: String, available: String },
    #[error("adapter {name} cannot run compute shaders (backend {backend}); choose another adapter")]
    NoCompute { name: String, backend: String },
    #[error("requesting a device from adapter {name} failed: {source}")]
    RequestDevice { name: String, source: wgpu::RequestDeviceError },
}

pub(crate) fn make_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    // Validation layers off unless asked for through WGPU_VALIDATION/WGPU_DEBUG: lavapipe is slow
    // enough already, and wgpu-core validates every call regardless.
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    wgpu::Instance::new(desc)
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

fn compute_capable(adapter: &wgpu::Adapter) -> bool {
    adapter.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
}

fn record(index: usize, adapter: &wgpu::Adapter) -> AdapterInfoRecord {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterInfoRecord {
        index,
        name: info.name,
        backend: info.backend.to_str().to_string(),
        device_type: device_type_name(info.device_type).to_string(),
        driver: info.driver,
        driver_info: info.driver_info,
        max_buffer_size: limits.max_buffer_size,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        features: format!("{:?}", adapter.features()),
        compute_capable: compute_capable(adapter),
    }
}

fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let instance = make_instance(backends);
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// Every adapter wgpu finds on this machine (honouring `WGPU_BACKEND`), in a stable order.
pub fn list_adapters() -> Vec<AdapterInfoRecord> {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    enumerate(backends).iter().enumerate().map(|(i, a)| record(i, a)).collect()
}

/// Preference rank for automatic choice (lower is better).
fn rank(adapter: &wgpu::Adapter, power: wgpu::PowerPreference) -> u32 {
    let info = adapter.get_info();
    let t = match (power, info.device_type) {
        (wgpu::PowerPreference::LowPower, wgpu::DeviceType::IntegratedGpu) => 0,
        (wgpu::PowerPreference::LowPower, wgpu::DeviceType::DiscreteGpu) => 1,
        (_, wgpu::DeviceType::DiscreteGpu) => 0,
        (_, wgpu::DeviceType::IntegratedGpu) => 1,
        (_, wgpu::DeviceType::VirtualGpu) => 2,
        (_, wgpu::DeviceType::Other) => 3,
        (_, wgpu::DeviceType::Cpu) => 4,
    };
    // GL adapters have downlevel compute; prefer the native APIs.
    let gl = u32::from(info.backend == wgpu::Backend::Gl);
    gl * 10 + t + if compute_capable(adapter) { 0 } else { 100 }
}

/// Picks an adapter per `sel` (environment already merged by the caller).
pub(crate) fn select_adapter(sel: &AdapterSelector) -> Result<wgpu::Adapter, GpuError> {
    let backends = sel.backends.unwrap_or(wgpu::Backends::all());
    let mut adapters = enumerate(backends);
    if adapters.is_empty() {
        return Err(GpuError::NoAdapter { backends: format!("{backends:?}"), hint: INSTALL_HINT });
    }
    let chosen = if let Some(index) = sel.index {
        let count = adapters.len();
        if index >= count {
            return Err(GpuError::BadIndex { index, count });
        }
        adapters.swap_remove(index)
    } else {
        if let Some(name) = &sel.name {
            let want = name.to_lowercase();
            let available: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&want));
            if adapters.is_empty() {
                return Err(GpuError::NoNameMatch { name: name.clone(), available: available.join(", ") });
            }
        }
        let power = sel.power.unwrap_or(wgpu::PowerPreference::HighPerformance);
        // min_by_key keeps the first of equals: stable with respect to wgpu's order.
        let best = (0..adapters.len()).min_by_key(|&i| rank(&adapters[i], power)).unwrap_or(0);
        adapters.swap_remove(best)
    };
    if !compute_capable(&chosen) {
        let info = chosen.get_info();
        return Err(GpuError::NoCompute { name: info.name, backend: info.backend.to_str().to_string() });
    }
    Ok(chosen)
}

/// wgpu's default limits, except the buffer-size limits raised to what the adapter offers
/// (real networks need buffers far above the 128/256 MiB defaults).
pub(crate) fn required_limits(adapter: &wgpu::Adapter) -> wgpu::Limits {
    let have = adapter.limits();
    let mut want = wgpu::Limits::default();
    want.max_buffer_size = want.max_buffer_size.max(have.max_buffer_size);
    want.max_storage_buffer_binding_size =
        want.max_storage_buffer_binding_size.max(have.max_storage_buffer_binding_size);
    // A binding never needs to exceed the buffer it binds.
    want.max_storage_buffer_binding_size = want.max_storage_buffer_binding_size.min(want.max_buffer_size);
    if !want.check_limits(&have) {
        // An adapter below the WebGPU defaults (some GL/downlevel ones): clamp to what it has.
        return want.or_worse_values_from(&have);
    }
    want
}

/// Which arithmetic mixed precision's convolution GEMMs get on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MixedGemm {
    /// 16×16×16 cooperative matrices of f16 accumulating in f32 (tensor cores, simdgroup
    /// matrices): conv_mixed.wgsl, with K tiles as deep as the device's workgroup memory allows.
    Coop16 { tiling: MixedTiling },
    /// The fp32 kernels (conv.wgsl) on the f16-valued operands: the same products, no speed-up.
    Fp32 { reason: String },
}

impl fmt::Display for MixedGemm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MixedGemm::Coop16 { tiling } => {
                let plural = |n: u32| if n == 1 { "" } else { "s" };
                write!(
                    f,
                    "cooperative matrices (16x16x16 f16 x f16 -> f32, conv_mixed.wgsl, K tiles of {} in {} stage{}",
                    tiling.bk,
                    tiling.stages,
                    plural(tiling.stages)
                )?;
                if tiling.wide_data_stages != tiling.stages {
                    write!(f, ", {} for 128-row backward data", tiling.wide_data_stages)?;
                }
                if tiling.pad != 0 {
                    write!(f, ", staged rows padded by {}", tiling.pad)?;
                }
                write!(f, ")")
            }
            MixedGemm::Fp32 { reason } => write!(f, "fp32 kernels on f16-valued operands ({reason})"),
        }
    }
}

/// How deep conv_mixed.wgsl's K tiles are and how many it keeps staged at once (`GemmTile::bk`,
/// `GemmTile::stages`). Deeper tiles and two stages mean fewer barriers per matrix multiply, but
/// need more workgroup memory than wgpu's 16 KiB default: the backend asks the device for it only
/// where the adapter has it (Apple GPUs 32 KiB, NVIDIA 48 KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixedTiling {
    pub bk: u32,
    pub stages: u32,
    /// Stages of the backward-data GEMMs with 128-row tiles (the others take `stages`).
    pub wide_data_stages: u32,
    /// f16 values added to each staged row's stride (`GemmTile::pad`).
    pub pad: u32,
}

impl MixedTiling {
    /// Within wgpu's default limits.
    pub const DEFAULT: MixedTiling = MixedTiling { bk: 16, stages: 1, wide_data_stages: 1, pad: 0 };
    /// Every tiling the backend may choose, preferred first. On an H200 (yolov4-tiny 416, batch
    /// 64) K 16 in one stage trained fastest of the uniform tilings, the deeper ones 3–21 %
    /// slower; but two stages sped up every backward-data GEMM of 128-row tiles (by 10–35 %)
    /// while slowing the others, so where the memory is granted those alone take two.
    pub const ALL: [MixedTiling; 10] = [
        MixedTiling { bk: 16, stages: 1, wide_data_stages: 2, pad: 0 },
        MixedTiling::DEFAULT,
        MixedTiling { bk: 16, stages: 1, wide_data_stages: 2, pad: 8 },
        MixedTiling { bk: 16, stages: 1, wide_data_stages: 1, pad: 8 },
        MixedTiling { bk: 16, stages: 2, wide_data_stages: 2, pad: 8 },
        MixedTiling { bk: 32, stages: 1, wide_data_stages: 1, pad: 8 },
        MixedTiling::uniform(16, 2),
        MixedTiling::uniform(32, 1),
        MixedTiling::uniform(32, 2),
        MixedTiling::uniform(64, 1),
    ];

    const fn uniform(bk: u32, stages: u32) -> MixedTiling {
        MixedTiling { bk, stages, wide_data_stages: stages, pad: 0 }
    }

    /// Workgroup memory conv_mixed.wgsl needs at this tiling: its widest tile's.
    pub fn workgroup_bytes(self) -> u32 {
        super::conv::mixed_workgroup_bytes(self)
    }

    /// Parses `k32`, `k32x2` (K tile depth, stages), `k16d2` (K 16 in one stage, 128-row
    /// backward data in two) and a `p8` suffix (rows padded by 8 values).
    fn parse(s: &str) -> Option<MixedTiling> {
        let (s, pad) = s.split_once('p').map_or((s, Some(0)), |(r, p)| (r, p.parse().ok()));
        let pad = pad?;
        let rest = s.strip_prefix('k')?;
        let (rest, data) = rest.split_once('d').map_or((rest, None), |(r, d)| (r, Some(d)));
        let (bk, stages) = rest.split_once('x').unwrap_or((rest, "1"));
        let stages: u32 = stages.parse().ok()?;
        let wide_data_stages = match data {
            Some(d) => d.parse().ok()?,
            None => stages,
        };
        let t = MixedTiling { bk: bk.parse().ok()?, stages, wide_data_stages, pad };
        MixedTiling::ALL.contains(&t).then_some(t)
    }
}

/// The preferred tiling the adapter's workgroup memory holds. `ENGINE_GPU_COOP_TILING=k16|k16d2|
/// k32|k64|k16x2|k32x2|k16p8|k16d2p8|k16x2p8|k32p8` picks one instead (to measure each; still only where it fits).
fn mixed_tiling(adapter: &wgpu::Adapter) -> MixedTiling {
    let have = adapter.limits().max_compute_workgroup_storage_size;
    let fits = |t: &MixedTiling| t.workgroup_bytes() <= have;
    if let Some(t) = std::env::var("ENGINE_GPU_COOP_TILING").ok().and_then(|v| MixedTiling::parse(&v)) {
        return if fits(&t) { t } else { MixedTiling::DEFAULT };
    }
    MixedTiling::ALL.into_iter().find(fits).unwrap_or(MixedTiling::DEFAULT)
}

const COOP_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16.union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);

/// What this adapter gives mixed precision's conv GEMMs: conv_mixed.wgsl needs f16, 16×16×16
/// f16 × f16 → f32 cooperative matrices and subgroups of exactly 32 (its layout puts invocation t
/// in subgroup t / 32). `ENGINE_GPU_COOP=0` turns it off (to measure what it gives).
pub(crate) fn mixed_gemm_support(adapter: &wgpu::Adapter) -> MixedGemm {
    let fp32 = |reason: &str| MixedGemm::Fp32 { reason: reason.to_string() };
    if std::env::var("ENGINE_GPU_COOP").is_ok_and(|v| v == "0") {
        return fp32("turned off by ENGINE_GPU_COOP=0");
    }
    let features = adapter.features();
    if !features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        return fp32("the adapter has no cooperative matrices");
    }
    if !features.contains(wgpu::Features::SHADER_F16) {
        return fp32("the adapter has no f16 in shaders");
    }
    let shape = adapter.cooperative_matrix_properties().iter().any(|p| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
            && p.ab_type == wgpu::CooperativeScalarType::F16
            && p.cr_type == wgpu::CooperativeScalarType::F32
    });
    if !shape {
        return fp32("the adapter has no 16x16x16 f16 x f16 -> f32 cooperative matrix");
    }
    let info = adapter.get_info();
    if (info.subgroup_min_size, info.subgroup_max_size) != (32, 32) {
        let why = format!("subgroups of {}..{} invocations, the kernels need exactly 32", info.subgroup_min_size, info.subgroup_max_size);
        return fp32(&why);
    }
    MixedGemm::Coop16 { tiling: mixed_tiling(adapter) }
}

/// Optional features the backend uses where the adapter has them: timestamp queries for
/// per-dispatch GPU time (inside passes where possible), f16 with cooperative matrices for
/// mixed precision's GEMMs, and `subgroups` for the conv GEMMs on CPU adapters (gpu/lanes.rs).
/// Nothing the default fp32 path needs to run.
pub(crate) fn wanted_features(adapter: &wgpu::Adapter, mixed: &MixedGemm, subgroups: bool) -> wgpu::Features {
    let want = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
    let mut have = adapter.features() & want;
    // Inside-pass timestamps are useless without timestamp queries themselves.
    if !have.contains(wgpu::Features::TIMESTAMP_QUERY) {
        have = wgpu::Features::empty();
    }
    if subgroups {
        have |= wgpu::Features::SUBGROUP;
    }
    if matches!(mixed, MixedGemm::Coop16 { .. }) {
        have |= COOP_FEATURES;
    }
    have
}

pub(crate) fn request_device(adapter: &wgpu::Adapter, mixed: &MixedGemm, subgroups: bool) -> Result<(wgpu::Device, wgpu::Queue, wgpu::Limits), GpuError> {
    let mut limits = required_limits(adapter);
    if let MixedGemm::Coop16 { tiling } = mixed {
        // mixed_tiling chose a tiling within what the adapter has.
        limits.max_compute_workgroup_storage_size = limits.max_compute_workgroup_storage_size.max(tiling.workgroup_bytes());
    }
    let features = wanted_features(adapter, mixed, subgroups);
    let experimental_features = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        // SAFETY: the experimental feature is used only by conv_mixed.wgsl, with the one matrix
        // shape and the subgroup size mixed_gemm_support checked the adapter reports.
        unsafe { wgpu::ExperimentalFeatures::enabled() }
    } else {
        wgpu::ExperimentalFeatures::disabled()
    };
    let desc = wgpu::DeviceDescriptor {
        label: Some("engine"),
        required_features: features,
        required_limits: limits.clone(),
        experimental_features,
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc))
        .map_err(|source| GpuError::RequestDevice { name: adapter.get_info().name, source })?;
    Ok((device, queue, limits))
}

pub(crate) fn describe(adapter: &wgpu::Adapter) -> AdapterInfoRecord {
    record(0, adapter)
}

#[cfg(test)]
mod tests {
    use super::MixedTiling;

    #[test]
    fn tiling_names_parse_to_the_listed_tilings_only() {
        let t = |bk, stages, wide_data_stages| Some(MixedTiling { bk, stages, wide_data_stages, pad: 0 });
        assert_eq!(MixedTiling::parse("k16"), t(16, 1, 1));
        assert_eq!(MixedTiling::parse("k16d2p8"), Some(MixedTiling { pad: 8, ..MixedTiling::ALL[0] }));
        assert_eq!(MixedTiling::parse("k16p8"), Some(MixedTiling { pad: 8, ..MixedTiling::DEFAULT }));
        assert_eq!(MixedTiling::parse("k16d2"), t(16, 1, 2));
        assert_eq!(MixedTiling::parse("k16x2"), t(16, 2, 2));
        assert_eq!(MixedTiling::parse("k32"), t(32, 1, 1));
        for bad in ["", "k", "k48", "k16x3", "k16d3", "k32d2", "16", "k16dx", "k16p", "k16p4", "k64p8"] {
            assert_eq!(MixedTiling::parse(bad), None, "{bad}");
        }
    }

    /// Two-stage 128-row backward data needs more than wgpu's default 16 KiB of workgroup
    /// memory, so the preferred tiling is asked for only where the adapter grants it; the default
    /// stays within the limit.
    #[test]
    fn wide_data_stages_need_more_than_the_default_limit() {
        assert!(MixedTiling::DEFAULT.workgroup_bytes() <= 16 * 1024);
        let preferred = MixedTiling::ALL[0];
        assert_eq!(preferred.wide_data_stages, 2);
        assert!(preferred.workgroup_bytes() > 16 * 1024 && preferred.workgroup_bytes() <= 32 * 1024);
    }
}
