//! Every WGSL kernel parses, validates, and translates to MSL (Metal) and SPIR-V (Vulkan) with naga,
//! the same front end wgpu uses. This runs without a GPU, so a broken shader fails CI on any machine.
//! Sources are checked as the backend builds them (generated preamble + file, every GEMM tile).

use std::path::PathBuf;

fn shader_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shaders-wgsl")
}

fn wgsl_files() -> Vec<PathBuf> {
    let dir = shader_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    files.sort();
    files
}

/// Whether a source is one of mixed precision's optional-feature modules (conv_mixed.wgsl: f16
/// and cooperative matrices, built only where the device has them).
fn needs_features(src: &str) -> bool {
    src.lines().any(|l| l.starts_with("enable wgpu_cooperative_matrix"))
}

/// Whether a source is one of the CPU adapters' subgroup variants (include/tile_lanes.wgsl and
/// its layout check, built only where the device has subgroups).
fn uses_subgroups(src: &str) -> bool {
    src.contains("subgroupShuffle(")
}

/// Parses and validates one source, returning the module and its info, or a readable error.
fn validate(name: &str, src: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string_with_path(src, name))?;
    // Only what every default-limits device offers: no f16, no subgroups, no 64-bit atomics;
    // f16 and cooperative matrices for the module that is built only where they exist, and
    // subgroups for the variants built only where the device has them.
    let mut caps = if needs_features(src) {
        naga::valid::Capabilities::SHADER_FLOAT16 | naga::valid::Capabilities::COOPERATIVE_MATRIX
    } else {
        naga::valid::Capabilities::empty()
    };
    if uses_subgroups(src) {
        caps |= naga::valid::Capabilities::SUBGROUP;
    }
    let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
    let info = validator.validate(&module).map_err(|e| e.emit_to_string_with_path(src, name))?;
    Ok((module, info))
}

#[test]
fn shader_directory_is_not_empty() {
    let files = wgsl_files();
    assert!(!files.is_empty(), "no .wgsl files in {}", shader_dir().display());
    // The families the GPU backend includes at compile time must all be present.
    for family in [
        "blas", "conv", "bias", "batchnorm", "activation", "pool", "resample", "route", "dropout", "optim", "reduce", "yolo",
    ] {
        assert!(
            files.iter().any(|f| f.file_stem().is_some_and(|s| s == family)),
            "missing shaders-wgsl/{family}.wgsl"
        );
    }
}

#[test]
fn every_file_is_built_by_the_backend() {
    let built: Vec<String> = engine::gpu::shader_sources().into_iter().map(|(n, _)| n).collect();
    for path in wgsl_files() {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        assert!(built.contains(&stem), "{} is not built by the GPU backend", path.display());
    }
}

#[test]
fn every_shader_validates_and_translates() {
    let mut failures = Vec::new();
    for (name, src) in engine::gpu::shader_sources() {
        let path = name.clone();
        let (module, info) = match validate(&name, &src) {
            Ok(v) => v,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        // Limits the backend relies on: ≤ 256 invocations and ≤ 16 KiB... checked below per entry.
        for ep in &module.entry_points {
            let [x, y, z] = ep.workgroup_size;
            if x * y * z > 256 {
                failures.push(format!("{path}: {} uses {} invocations (> 256)", ep.name, x * y * z));
            }
        }
        translate(&path, &src, &module, &info, &mut failures);
    }
    assert!(failures.is_empty(), "shader failures:\n{}", failures.join("\n"));
}

/// Translates a validated module to MSL and SPIR-V, adding what fails to `failures`.
fn translate(path: &str, src: &str, module: &naga::Module, info: &naga::valid::ModuleInfo, failures: &mut Vec<String>) {
    // Metal 2.3 has the simdgroup matrices cooperative matrices become; 2.1 the SIMD-group
    // shuffles subgroup operations become.
    let lang_version = if needs_features(src) {
        (2, 3)
    } else if uses_subgroups(src) {
        (2, 1)
    } else {
        (2, 0)
    };
    let msl_opts = naga::back::msl::Options { lang_version, ..Default::default() };
    if let Err(e) = naga::back::msl::write_string(module, info, &msl_opts, &naga::back::msl::PipelineOptions::default()) {
        failures.push(format!("{path}: MSL: {e:?}"));
    }
    if let Err(e) = naga::back::spv::write_vec(module, info, &naga::back::spv::Options::default(), None) {
        failures.push(format!("{path}: SPIR-V: {e:?}"));
    }
}

/// Bytes of every workgroup variable of a module (an upper bound on what any one entry point uses).
fn workgroup_bytes(module: &naga::Module) -> u32 {
    let mut bytes = 0u32;
    for (_, var) in module.global_variables.iter() {
        if var.space == naga::AddressSpace::WorkGroup {
            bytes += module.types[var.ty].inner.size(module.to_ctx());
        }
    }
    bytes
}

#[test]
fn workgroup_memory_within_default_limit() {
    // Default max_compute_workgroup_storage_size is 16 KiB.
    for (name, src) in engine::gpu::shader_sources() {
        let (module, _) = validate(&name, &src).unwrap_or_else(|e| panic!("{e}"));
        let bytes = workgroup_bytes(&module);
        assert!(bytes <= 16 * 1024, "{name}: {bytes} bytes of workgroup memory");
    }
}

/// conv_mixed.wgsl's deeper tilings go beyond the default limit only where the device grants
/// more: each validates and translates, declares exactly the workgroup memory the backend asks
/// the device for (`GemmTile::mixed_workgroup_bytes`), and fits an NVIDIA GPU's 48 KiB; the
/// widest tile of each tiling needs what `MixedTiling::workgroup_bytes` says.
#[test]
fn deep_mixed_tilings_translate_and_need_what_the_backend_asks_for() {
    let mut failures = Vec::new();
    let sources = engine::gpu::deep_mixed_sources();
    assert!(!sources.is_empty());
    for (name, src, need) in sources {
        let (module, info) = validate(&name, &src).unwrap_or_else(|e| panic!("{e}"));
        let bytes = workgroup_bytes(&module);
        if bytes != need || bytes > 48 * 1024 {
            failures.push(format!("{name}: declares {bytes} bytes of workgroup memory, the backend asks for {need}"));
        }
        translate(&name, &src, &module, &info, &mut failures);
    }
    for tiling in engine::gpu::MixedTiling::ALL {
        let stages = tiling.stages.max(tiling.wide_data_stages);
        let widest = engine::gpu::GemmTile { ty: 16, tx: 16, tm: 8, tn: 8, bk: tiling.bk, ks: 0, stages, pad: tiling.pad };
        assert_eq!(tiling.workgroup_bytes(), widest.mixed_workgroup_bytes(), "{tiling:?}");
    }
    assert!(failures.is_empty(), "shader failures:\n{}", failures.join("\n"));
}

/// One op, three places, one name (ARCHITECTURE "Invariants"): every kernel file
/// `shaders-wgsl/<op>.wgsl` has its CPU twin `engine/src/cpu/<op>.rs` and a parity test
/// (`engine/tests/parity/<op>.rs`, or `engine/tests/gpu_<op>.rs` for an op with a test binary of
/// its own), each holding at least one `#[test]`; and every parity module names a kernel.
#[test]
fn every_kernel_has_its_cpu_twin_and_parity_test() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let has_test = |p: &PathBuf| std::fs::read_to_string(p).is_ok_and(|s| s.contains("#[test]"));
    let ops: Vec<String> =
        wgsl_files().iter().filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string)).collect();
    for op in &ops {
        let twin = root.join("src/cpu").join(format!("{op}.rs"));
        assert!(twin.is_file(), "shaders-wgsl/{op}.wgsl has no CPU twin {}", twin.display());
        let tests = [root.join("tests/parity").join(format!("{op}.rs")), root.join("tests").join(format!("gpu_{op}.rs"))];
        assert!(tests.iter().any(has_test), "shaders-wgsl/{op}.wgsl has no parity test (tests/parity/{op}.rs or tests/gpu_{op}.rs)");
    }
    for entry in std::fs::read_dir(root.join("tests/parity")).expect("engine/tests/parity") {
        let path = entry.expect("parity entry").path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        assert!(ops.contains(&stem), "{} tests no kernel: no shaders-wgsl/{stem}.wgsl", path.display());
    }
}

/// The mixed-precision probe's kernels (`benches/coop_gemm*.wgsl`, issue 15) needs f16 and cooperative
/// matrices: it validates with those capabilities and translates to SPIR-V (Vulkan) and to MSL
/// (Metal simdgroup matrices), so the probe fails here rather than on a device.
#[test]
fn coop_gemm_probe_validates_and_translates() {
    for (name, src) in [
        ("benches/coop_gemm.wgsl", include_str!("../benches/coop_gemm.wgsl")),
        ("benches/coop_gemm_direct.wgsl", include_str!("../benches/coop_gemm_direct.wgsl")),
        ("benches/coop_gemm_direct64.wgsl", include_str!("../benches/coop_gemm_direct64.wgsl")),
        ("benches/coop_gemm_staged.wgsl", include_str!("../benches/coop_gemm_staged.wgsl")),
    ] {
        check_probe(name, src);
    }
}

fn check_probe(name: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(src, name)));
    let caps = naga::valid::Capabilities::SHADER_FLOAT16 | naga::valid::Capabilities::COOPERATIVE_MATRIX;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string_with_path(src, name)));
    // With bounds checks, as wgpu builds a module by default.
    let checked = naga::proc::BoundsCheckPolicies {
        index: naga::proc::BoundsCheckPolicy::Restrict,
        buffer: naga::proc::BoundsCheckPolicy::ReadZeroSkipWrite,
        image_load: naga::proc::BoundsCheckPolicy::ReadZeroSkipWrite,
        binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
    };
    let spv_opts = naga::back::spv::Options { bounds_check_policies: checked, ..Default::default() };
    let spv = naga::back::spv::write_vec(&module, &info, &spv_opts, None);
    assert!(spv.is_ok(), "{name}: SPIR-V: {:?}", spv.err());
    let msl_opts = naga::back::msl::Options { lang_version: (2, 3), bounds_check_policies: checked, ..Default::default() };
    let msl = naga::back::msl::write_string(&module, &info, &msl_opts, &naga::back::msl::PipelineOptions::default());
    assert!(msl.is_ok(), "{name}: MSL: {:?}", msl.err());
}
