//! Kernel parameters as typed `#[repr(C)]` records, one per WGSL module (its `struct P`).
//!
//! Each record is copied byte for byte into the kernel's uniform block, so its fields must sit at
//! the offsets WGSL gives `struct P`'s members. The `params!` macro records every field's name and
//! offset; a test (`layout_matches_wgsl` below) parses each module with naga and checks the two
//! layouts member by member, so a field added on one side only fails the build's tests.
//!
//! Views are passed as float offsets (`o1`, `o2`, …) because storage bindings must start on
//! 256-byte boundaries while views start anywhere.

use bytemuck::{Pod, Zeroable};

use super::pipelines::Module;

/// A kernel parameter record: plain old data with a known WGSL twin.
pub(crate) trait KernelParams: Pod {
    /// The module whose `struct P` this record mirrors.
    const MODULE: Module;
    /// (field name, byte offset) in declaration order (for the layout test).
    #[cfg(test)]
    fn fields() -> Vec<(&'static str, usize)>;
}

macro_rules! params {
    ($(#[$doc:meta])* $name:ident for $module:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
        pub(crate) struct $name { $($(#[$fdoc])* pub(crate) $field: $ty),* }

        impl KernelParams for $name {
            const MODULE: Module = Module::$module;
            #[cfg(test)]
            fn fields() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($field), std::mem::offset_of!($name, $field))),*]
            }
        }
    };
}

params! {
    /// blas.wgsl: elementwise kernels over `n` floats of up to five views.
    BlasP for Blas { n: u32, o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, a: f32, b: f32 }
}

params! {
    /// half.wgsl: `n` floats of view `o1` rounded to f16 into view `o2`.
    HalfP for Half { n: u32, o1: u32, o2: u32, pad: u32 }
}

params! {
    /// conv.wgsl: the three implicit GEMMs of a convolution and the split-K reduce.
    ConvP for Conv {
        batch: u32, c: u32, h: u32, w: u32, filters: u32, size: u32, stride: u32, pad: u32,
        oh: u32, ow: u32,
        /// Input channels and filters per group.
        cg: u32, mg: u32,
        /// GEMM rows, columns, depth.
        m: u32, n: u32, k: u32,
        /// Row tiles per group (the grid's y is m_tiles × groups).
        m_tiles: u32,
        o1: u32, o2: u32, o3: u32, o4: u32,
        /// K per split (a multiple of the tile depth), and the number of splits.
        kchunk: u32, splits: u32,
        /// Weights (length of dw), for the split-K partials and their reduce.
        total: u32,
        /// 1: the forward adds a bias (binding 4) in its write-out.
        has_bias: u32,
        /// Backward data: the stride phase (py, px), its pixel grid (qh × qw), its first taps
        /// (ky0, kx0) and tap counts (nky × nkx).
        py: u32, px: u32, qh: u32, qw: u32, ky0: u32, kx0: u32, nky: u32, nkx: u32,
        /// conv_mixed.wgsl: 1 lets whole tiles write out directly (0, the default, stages every tile).
        direct: u32,
        /// Mixed precision's column path (gpu/conv_col.rs): 1 reads B from the f16 im2col
        /// matrix (binding 5, from vec4 word o5) of kp rows and batch·ohwp columns.
        col: u32, kp: u32, ohwp: u32, o5: u32,
        /// conv_forward: 1 adds into y (the column path's backward data adds into dx).
        accumulate: u32,
        /// The column path's packed f16 weights (from vec4 word oa of binding 5), and
        /// conv_pack_weights_f16's choice of the backward data's flipped weights.
        oa: u32, flip: u32,
    }
}

params! {
    /// bias.wgsl: bias add and the chunked bias gradient.
    BiasP for Bias {
        batch: u32, channels: u32, spatial: u32, o1: u32, o2: u32,
        /// Chunking of each channel (include/reduce.wgsl, gpu/channels.rs).
        chunks: u32, ppc: u32, pieces: u32, piece_len: u32,
    }
}

params! {
    /// batchnorm.wgsl: statistics, normalisation with a fused activation, backward.
    BnP for Batchnorm {
        batch: u32, channels: u32, spatial: u32,
        o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32, o7: u32, o8: u32,
        /// bn_backward_*: [`crate::shapes::BnBackward`] code.
        form: u32,
        /// Fused activation code (linear for plain batch norm).
        act: u32,
        /// bn_normalize: write the pre-activation too.
        has_pre: u32,
        /// Chunking of each channel, and where the backward coefficients start in the scratch.
        chunks: u32, ppc: u32, pieces: u32, piece_len: u32, coefs: u32,
        /// bn_stats_darknet_cpu: Darknet's f32 scales 1/N and 1/(N − 1).
        inv_n: f32, inv_n1: f32,
        /// 1: round y (bn_normalize), and dy where read and dx where written (backward), to f16.
        store_f16: u32,
    }
}

params! {
    /// activation.wgsl.
    ActP for Activation { n: u32, act: u32, o1: u32, o2: u32, o3: u32, o4: u32 }
}

params! {
    /// pool.wgsl: max pooling (Darknet's window origin `-padding/2`) and global average pooling.
    PoolP for Pool {
        batch: u32, c: u32, h: u32, w: u32, size: u32, stride: u32,
        /// padding / 2
        off: u32,
        oh: u32, ow: u32, o1: u32, o2: u32, o3: u32,
        /// avgpool: pixels per channel.
        spatial: u32,
    }
}

params! {
    /// resample.wgsl: upsample and reorg.
    ResampleP for Resample { batch: u32, c: u32, h: u32, w: u32, stride: u32, o1: u32, o2: u32, scale: f32 }
}

params! {
    /// route.wgsl: strided slice copies and scale_channels.
    RouteP for Route {
        batch: u32,
        /// copy_slices: floats per image; scale_channels: channels.
        len: u32,
        src_stride: u32, src_offset: u32, dst_stride: u32, dst_offset: u32, accumulate: u32,
        spatial: u32,
        o1: u32, o2: u32, o3: u32, o4: u32, o5: u32,
    }
}

params! {
    /// dropout.wgsl (mask from the counter-based hash of crate::rng).
    DropoutP for Dropout {
        n: u32,
        /// Low and high 32 bits of the seed.
        s0: u32, s1: u32,
        o1: u32, o2: u32,
        prob: f32,
        /// 1 / (1 − p) and 1 − p, computed on the host.
        scale: f32, keep: f32,
    }
}

params! {
    /// optim.wgsl: SGD and Adam.
    OptimP for Optim {
        n: u32, o1: u32, o2: u32, o3: u32, o4: u32,
        lr: f32, momentum: f32,
        /// decay × batch, and (SGD) lr / batch.
        decay_b: f32, lr_over_b: f32,
        b1: f32, b2: f32, eps: f32,
        /// Adam bias corrections 1 − b1^t and 1 − b2^t.
        bc1: f32, bc2: f32,
    }
}

params! {
    /// reduce.wgsl: whole-tensor sums, sums of squares, non-finite tests.
    ReduceP for Reduce { n: u32, chunk: u32, parts: u32, mode: u32, o1: u32, o2: u32, index: u32 }
}

params! {
    /// yolo.wgsl: one [yolo] head.
    YoloP for Yolo {
        batch: u32, w: u32, h: u32, classes: u32, n: u32, num_anchors: u32, net_w: u32, net_h: u32,
        max_boxes: u32, wh: u32, outputs: u32,
        /// batch · n · wh (anchor-cells).
        total: u32,
        o1: u32, o2: u32, o3: u32, o4: u32, o5: u32, o6: u32,
        /// bit 0 new_coords, 1 focal_loss, 2 objectness_smooth, 3 max_delta set, 4 iou_thresh < 1.
        flags: u32,
        iou_loss: u32, iou_thresh_kind: u32, parts: u32, len: u32,
        scale_x_y: f32, beta: f32, ignore_thresh: f32, truth_thresh: f32, iou_thresh: f32,
        iou_normalizer: f32, obj_normalizer: f32, label_smooth_eps: f32, max_delta: f32,
    }
}

params! {
    /// softmax.wgsl: softmax per group and its cross-entropy.
    SoftmaxP for Softmax {
        rows: u32, n: u32, total: u32, o1: u32, o2: u32, o3: u32, o4: u32,
        /// 1 / temperature.
        inv_t: f32,
    }
}

params! {
    /// cost.wgsl: [cost] error and gradient (`kind`: [`crate::shapes::CostKind::code`]).
    CostP for Cost { n: u32, kind: u32, o1: u32, o2: u32, o3: u32, o4: u32, o5: u32 }
}

/// Float offset of a view as a kernel parameter (alloc refuses views WGSL's u32 cannot index).
pub(crate) fn off(b: &super::GpuBuf) -> u32 {
    b.off()
}

/// A size as a kernel parameter; sizes past u32 cannot be indexed by WGSL.
pub(crate) fn u(v: usize) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| panic!("kernel parameter {v} exceeds u32"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (module, fields, size) of every record.
    fn records() -> Vec<(Module, Vec<(&'static str, usize)>, usize)> {
        fn r<P: KernelParams>() -> (Module, Vec<(&'static str, usize)>, usize) {
            (P::MODULE, P::fields(), std::mem::size_of::<P>())
        }
        vec![
            r::<BlasP>(),
            r::<ConvP>(),
            r::<BiasP>(),
            r::<BnP>(),
            r::<ActP>(),
            r::<PoolP>(),
            r::<ResampleP>(),
            r::<RouteP>(),
            r::<DropoutP>(),
            r::<OptimP>(),
            r::<ReduceP>(),
            r::<YoloP>(),
            r::<SoftmaxP>(),
            r::<CostP>(),
            r::<HalfP>(),
        ]
    }

    #[test]
    fn every_module_has_one_record() {
        let recs = records();
        for m in super::super::pipelines::MODULES.into_iter().filter(|m| m.params_module() == *m) {
            assert_eq!(recs.iter().filter(|r| r.0 == m).count(), 1, "module {} needs exactly one params record", m.name());
        }
    }

    #[test]
    fn layout_matches_wgsl() {
        for (module, fields, size) in records() {
            let src = module.default_source();
            let parsed = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {e}", module.name()));
            let p = parsed
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some("P"))
                .unwrap_or_else(|| panic!("{}.wgsl has no struct P", module.name()));
            let naga::TypeInner::Struct { members, span } = &p.1.inner else {
                panic!("{}.wgsl: P is not a struct", module.name());
            };
            let wgsl: Vec<(String, usize)> =
                members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect();
            let rust: Vec<(String, usize)> = fields.iter().map(|(n, o)| (n.to_string(), *o)).collect();
            assert_eq!(rust, wgsl, "{}.wgsl struct P differs from its Rust record", module.name());
            assert_eq!(size, *span as usize, "{}.wgsl struct P size", module.name());
            assert!(size <= super::super::pipelines::PARAMS_BYTES as usize, "{} params exceed a slot", module.name());
        }
    }
}
