//! `cargo bench -p engine --bench coop_gemm -- [m n k]`
//!
//! Probe for issue 15 (mixed precision): what the adapter offers for f16 and cooperative
//! matrices through wgpu, and, where it offers f16 × f16 → f32 16×16 matrices with 32-wide
//! subgroups, how fast GEMMs on them run (f16 operands, f32 accumulation), against this
//! project's fp32 GEMM on the same product (a 1×1 convolution: filters = m, batch·h·w = n,
//! channels = k; default 4096 × 4096 × 4096). Four kernels: `coop_gemm.wgsl` (f32 operands
//! rounded to f16 while staged in workgroup memory), `coop_gemm_direct.wgsl` (f16 operands,
//! fragments loaded straight from storage; `coop_gemm_direct64.wgsl` the same with 64×64 per
//! subgroup), `coop_gemm_staged.wgsl` (f16 operands staged in
//! workgroup memory, 128×128 tiles). Checks 512 entries of each result against the f64 product
//! of the f16-rounded operands. Prints; asserts nothing (a probe, not a test).

use std::time::Instant;

use engine::Backend;
use engine::gpu::{AdapterSelector, GpuBackend};
use engine::rng::uniform;
use engine::shapes::ConvShape;
use wgpu::util::DeviceExt;

const REPS: usize = 20;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (m, n, k) = match args[..] {
        [m, n, k, ..] => (m, n, k),
        _ => (4096, 4096, 4096),
    };
    assert!(m % 64 == 0 && n % 64 == 0 && k % 32 == 0, "m, n multiples of 64 and k of 32");
    let flops = 2.0 * (m * n * k) as f64;
    let a: Vec<f32> = (0..m * k).map(|i| uniform(1, i as u32) - 0.5).collect();
    let b: Vec<f32> = (0..k * n).map(|i| uniform(2, i as u32) - 0.5).collect();

    fp32_baseline(m, n, k, flops);

    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let instance = wgpu::Instance::new(desc);
    let Ok(adapter) = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    })) else {
        println!("no adapter");
        return;
    };
    let info = adapter.get_info();
    let features = adapter.features();
    let limits = adapter.limits();
    println!("adapter: {} ({:?}, driver {})", info.name, info.backend, info.driver_info);
    for (name, f) in [
        ("SHADER_F16", wgpu::Features::SHADER_F16),
        ("SUBGROUP", wgpu::Features::SUBGROUP),
        ("EXPERIMENTAL_COOPERATIVE_MATRIX", wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
    ] {
        println!("  {name}: {}", features.contains(f));
    }
    println!("  subgroup size {}..{}", info.subgroup_min_size, info.subgroup_max_size);
    let props = adapter.cooperative_matrix_properties();
    for p in &props {
        println!(
            "  coop matrix {}x{}x{} {:?} x {:?} -> {:?}{}",
            p.m_size,
            p.n_size,
            p.k_size,
            p.ab_type,
            p.ab_type,
            p.cr_type,
            if p.saturating_accumulation { " (saturating)" } else { "" }
        );
    }
    let usable = props.iter().any(|p| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
            && p.ab_type == wgpu::CooperativeScalarType::F16
            && p.cr_type == wgpu::CooperativeScalarType::F32
    });
    let want = wgpu::Features::SHADER_F16 | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
    if !usable || !features.contains(want) || info.subgroup_min_size > 32 || info.subgroup_max_size < 32 {
        println!("no f16 16x16x16 cooperative matrix with f32 accumulation and 32-wide subgroups here: the coop GEMM is not run");
        return;
    }
    let mut required_limits = wgpu::Limits::default();
    required_limits.max_buffer_size = limits.max_buffer_size;
    required_limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size;
    // SAFETY: the probe uses the experimental cooperative-matrix feature only in the shader
    // below, within the shapes the adapter reported.
    let experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("coop probe"),
        required_features: want | (features & wgpu::Features::TIMESTAMP_QUERY),
        required_limits,
        experimental_features: experimental,
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .expect("device with cooperative matrices");
    let a16: Vec<u16> = a.iter().map(|&x| f16_bits(x)).collect();
    let b16: Vec<u16> = b.iter().map(|&x| f16_bits(x)).collect();
    for v in VARIANTS {
        if m % v.tile.0 != 0 || n % v.tile.1 != 0 || k % 32 != 0 {
            println!("{}: skipped ({m}x{n}x{k} is not a multiple of its {}x{} tile)", v.name, v.tile.0, v.tile.1);
            continue;
        }
        let (sa, sb): (&[u8], &[u8]) = if v.f16_operands {
            (bytemuck::cast_slice(&a16), bytemuck::cast_slice(&b16))
        } else {
            (bytemuck::cast_slice(&a), bytemuck::cast_slice(&b))
        };
        let c = run_variant(&device, &queue, v, sa, sb, m, n, k, flops);
        let mut worst: f64 = 0.0;
        for s in 0..512u32 {
            let i = (uniform(3, s) * m as f32) as usize % m;
            let j = (uniform(4, s) * n as f32) as usize % n;
            let exact: f64 = (0..k).map(|p| round_f16(a[i * k + p]) as f64 * round_f16(b[p * n + j]) as f64).sum();
            let scale: f64 = (0..k).map(|p| (a[i * k + p] as f64 * b[p * n + j] as f64).abs()).sum();
            worst = worst.max((c[i * n + j] as f64 - exact).abs() / scale.max(1e-30));
        }
        println!("{}: worst |c - exact| / sum|a*b| over 512 entries: {worst:.3e}", v.name);
    }
}

/// One cooperative-matrix GEMM kernel of the probe.
struct Variant {
    name: &'static str,
    source: &'static str,
    /// Operands in memory as f16 (else f32, rounded in the kernel).
    f16_operands: bool,
    /// Rows × columns of C per workgroup.
    tile: (usize, usize),
}

const VARIANTS: &[Variant] = &[
    Variant { name: "coop staged f32->f16 64x64", source: include_str!("coop_gemm.wgsl"), f16_operands: false, tile: (64, 64) },
    Variant { name: "coop direct f16 64x128", source: include_str!("coop_gemm_direct.wgsl"), f16_operands: true, tile: (64, 128) },
    Variant { name: "coop direct f16 128x128 (64x64 per subgroup)", source: include_str!("coop_gemm_direct64.wgsl"), f16_operands: true, tile: (128, 128) },
    Variant { name: "coop staged f16 128x128", source: include_str!("coop_gemm_staged.wgsl"), f16_operands: true, tile: (128, 128) },
];

/// Times `REPS` dispatches of `v` (wall time, C cleared before each) and returns C.
#[allow(clippy::too_many_arguments)]
fn run_variant(device: &wgpu::Device, queue: &wgpu::Queue, v: &Variant, a: &[u8], b: &[u8], m: usize, n: usize, k: usize, flops: f64) -> Vec<f32> {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(v.name),
        source: wgpu::ShaderSource::Wgsl(v.source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(v.name),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let storage = |data: &[u8], label| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: data,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    };
    let ba = storage(a, "a");
    let bb = storage(b, "b");
    let bc = storage(bytemuck::cast_slice(&vec![0.0f32; m * n]), "c");
    let dims = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("dims"),
        contents: bytemuck::cast_slice(&[m as u32, n as u32, k as u32, 0]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: ba.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: bb.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: bc.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 3, resource: dims.as_entire_binding() },
        ],
    });
    let run = |reps: usize| {
        let mut enc = device.create_command_encoder(&Default::default());
        for _ in 0..reps {
            enc.clear_buffer(&bc, 0, None);
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups((n / v.tile.1) as u32, (m / v.tile.0) as u32, 1);
        }
        queue.submit([enc.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    };
    run(1);
    let t = Instant::now();
    run(REPS);
    let s = t.elapsed().as_secs_f64() / REPS as f64;
    println!("{} {m}x{n}x{k}: {:.3} ms, {:.1} TFLOP/s (wall time, clears included)", v.name, s * 1e3, flops / s / 1e12);
    let read = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (m * n * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&bc, 0, &read, 0, None);
    queue.submit([enc.finish()]);
    read.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    let c: Vec<f32> = bytemuck::cast_slice(&read.slice(..).get_mapped_range().expect("mapped")).to_vec();
    c
}

/// This project's fp32 GEMM on the same product, as a 1×1 convolution, timed with GPU timestamps.
fn fp32_baseline(m: usize, n: usize, k: usize, flops: f64) {
    let Ok(g) = GpuBackend::new(&AdapterSelector::default()) else {
        println!("fp32 baseline: no GPU backend");
        return;
    };
    // n = batch · h · w with 32 × 32 images.
    let (batch, hw) = if n % 1024 == 0 { (n / 1024, 32) } else { (n / 64, 8) };
    let s = ConvShape::new(batch, k, hw, hw, m, 1, 1, 0, 1);
    let x = g.alloc(batch * k * hw * hw);
    let w = g.alloc(m * k);
    let y = g.alloc(batch * m * hw * hw);
    g.fill(&x, 0.25);
    g.fill(&w, 0.5);
    let _ = g.take_timings();
    for _ in 0..REPS + 1 {
        g.conv_forward(&x, &w, &y, &s);
    }
    g.download(&y);
    let times: Vec<f64> =
        g.take_timings().unwrap_or_default().iter().filter(|t| t.kernel.starts_with("conv_")).map(|t| t.seconds).collect();
    if times.len() > 1 {
        let mean = times[1..].iter().sum::<f64>() / (times.len() - 1) as f64;
        println!("fp32 GEMM (conv_forward 1x1, GPU timestamps) {m}x{n}x{k}: {:.3} ms, {:.1} TFLOP/s", mean * 1e3, flops / mean / 1e12);
    } else {
        println!("fp32 GEMM: no timestamps on this adapter");
    }
}

/// The f16 bit pattern of `x` rounded to the nearest f16 (finite inputs in f16's range).
fn f16_bits(x: f32) -> u16 {
    let r = round_f16(x);
    let sign = ((r.to_bits() >> 16) & 0x8000) as u16;
    let a = r.abs();
    if a == 0.0 {
        return sign;
    }
    let exp = ((a.to_bits() >> 23) & 0xff) as i32 - 127;
    if exp < -14 {
        // Subnormal: a multiple of 2^-24.
        return sign | (a * 16_777_216.0) as u16;
    }
    sign | (((exp + 15) as u16) << 10) | ((a.to_bits() >> 13) & 0x3ff) as u16
}

/// Round to the nearest f16 (ties to even), returned as f32; finite inputs in f16's range.
fn round_f16(x: f32) -> f32 {
    let bits = x.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32 - 127;
    if exp < -24 {
        return 0.0f32.copysign(x);
    }
    // f16 keeps 10 mantissa bits for normals; fewer below 2^-14 (subnormals).
    let drop = if exp < -14 { 13 + (-14 - exp) } else { 13 } as u32;
    let half = 1u32 << (drop - 1);
    let mask = (1u32 << drop) - 1;
    let rem = bits & mask;
    let mut r = bits & !mask;
    if rem > half || (rem == half && (r >> drop) & 1 == 1) {
        r += 1 << drop;
    }
    f32::from_bits(r)
}
