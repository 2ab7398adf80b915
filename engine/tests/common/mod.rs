//! Helpers shared by the GPU integration tests.

use std::sync::OnceLock;

use engine::gpu::{AdapterSelector, GpuBackend};

/// The default adapter, or `None` with a printed reason; with REQUIRE_GPU=1 (CI) a missing
/// adapter fails the test instead of skipping it.
#[allow(dead_code)] // not every test crate that includes `common` uses it
pub fn gpu_or_skip() -> Option<GpuBackend> {
    match GpuBackend::new(&AdapterSelector::default()) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("REQUIRE_GPU=1 but no GPU backend: {e}"),
        Err(e) => {
            println!("skipping: no GPU adapter ({e})");
            None
        }
    }
}

/// ‖a − b‖ / ‖a‖ (a is the reference).
#[allow(dead_code)] // not every test crate that includes `common` uses it
pub fn rel_norm_diff(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((*x - *y) as f64).powi(2)).sum::<f64>().sqrt();
    let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    num / den.max(1e-12)
}

/// One backend for every test of a test binary (creating a device per test is slow on
/// lavapipe); `None` with a printed reason, or a failure with REQUIRE_GPU=1.
#[allow(dead_code)] // not every test crate that includes `common` uses it
pub fn shared_gpu() -> Option<&'static GpuBackend> {
    static G: OnceLock<Result<GpuBackend, String>> = OnceLock::new();
    match G.get_or_init(|| GpuBackend::new(&AdapterSelector::default()).map_err(|e| e.to_string())) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("REQUIRE_GPU=1 but no GPU backend: {e}"),
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

pub mod darknet;
