//! Shader registry and pipeline cache.
//!
//! Every kernel binds, in group 0: binding 0 = its params block (uniform, dynamic offset into the
//! params arena), bindings 1..=n = whole storage buffers (read_write, so views of one storage may
//! be bound several times in a dispatch). A kernel's pipeline layout depends only on n, so layouts
//! are shared. Modules and pipelines are built lazily, once, and cached for the backend's lifetime.

use std::sync::OnceLock;

/// Size of one params slot; also the bound size of the uniform block. Every WGSL params struct
/// must fit (the largest is 96 bytes).
pub(crate) const PARAMS_BYTES: u64 = 256;
/// Most storage buffers any kernel binds (batchnorm: 7; the default per-stage limit is 8).
pub(crate) const MAX_BUFFERS: usize = 7;

/// WGSL sources, included at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

pub(crate) const MODULES: [Module; 12] = [
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
];

impl Module {
    pub(crate) fn source(self) -> &'static str {
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
        }
    }
    fn index(self) -> usize {
        MODULES.iter().position(|&m| m == self).unwrap_or(0)
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

kernels! {
    Fill => (Blas, "fill", 1),
    Copy => (Blas, "copy", 2),
    Axpy => (Blas, "axpy", 2),
    Scal => (Blas, "scal", 1),
    Add => (Blas, "add", 3),
    Mul => (Blas, "mul", 3),
    Div => (Blas, "div", 3),
    Exp => (Blas, "exp_fwd", 2),
    Log => (Blas, "log_fwd", 2),
    Pow => (Blas, "pow_fwd", 2),
    MulBackward => (Blas, "mul_bwd", 5),
    DivBackward => (Blas, "div_bwd", 5),
    ExpBackward => (Blas, "exp_bwd", 3),
    LogBackward => (Blas, "log_bwd", 3),
    PowBackward => (Blas, "pow_bwd", 3),
    ConvForward => (Conv, "conv_forward", 4),
    ConvBackwardData => (Conv, "conv_backward_data", 4),
    ConvBackwardWeights => (Conv, "conv_backward_weights", 4),
    ConvSplitkReduce => (Conv, "conv_splitk_reduce", 4),
    BiasAdd => (Bias, "bias_add", 2),
    BiasBackward => (Bias, "bias_backward", 2),
    BnStats => (Batchnorm, "bn_stats", 5),
    BnNormalize => (Batchnorm, "bn_normalize", 7),
    BnInfer => (Batchnorm, "bn_infer", 6),
    BnBackward => (Batchnorm, "bn_backward", 7),
    ActForward => (Activation, "act_forward", 2),
    ActBackward => (Activation, "act_backward", 4),
    MaxpoolForward => (Pool, "maxpool_forward", 2),
    MaxpoolBackward => (Pool, "maxpool_backward", 3),
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
}

impl Kernel {
    fn index(self) -> usize {
        // Discriminants run 0.. in declaration order, the order of KERNELS.
        self as usize
    }
}

/// Bind group layouts (one per storage-buffer count), pipeline layouts, modules and pipelines.
pub(crate) struct Pipelines {
    pub(crate) bind_layouts: Vec<wgpu::BindGroupLayout>,
    pipeline_layouts: Vec<wgpu::PipelineLayout>,
    modules: Vec<OnceLock<wgpu::ShaderModule>>,
    pipelines: Vec<OnceLock<wgpu::ComputePipeline>>,
}

impl Pipelines {
    pub(crate) fn new(device: &wgpu::Device) -> Pipelines {
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
            modules: MODULES.iter().map(|_| OnceLock::new()).collect(),
            pipelines: KERNELS.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    fn module(&self, device: &wgpu::Device, m: Module) -> &wgpu::ShaderModule {
        self.modules[m.index()].get_or_init(|| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(m.name()),
                source: wgpu::ShaderSource::Wgsl(m.source().into()),
            })
        })
    }

    /// The pipeline of `k`, compiled on first use.
    pub(crate) fn get(&self, device: &wgpu::Device, k: Kernel) -> &wgpu::ComputePipeline {
        self.pipelines[k.index()].get_or_init(|| {
            let module = self.module(device, k.module());
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.entry()),
                layout: Some(&self.pipeline_layouts[k.buffers()]),
                module,
                entry_point: Some(k.entry()),
                compilation_options: Default::default(),
                cache: None,
            })
        })
    }

    /// Compiles every pipeline now (so the first training step is not slowed by compilation).
    pub(crate) fn warm_up(&self, device: &wgpu::Device) {
        for &k in KERNELS {
            self.get(device, k);
        }
    }
}
