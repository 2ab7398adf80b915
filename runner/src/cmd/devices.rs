//! `runner devices`: every adapter wgpu can see, with what the GPU backend would use.

use std::process::ExitCode;

use anyhow::Result;

pub fn run() -> Result<ExitCode> {
    let adapters = engine::gpu::list_adapters();
    if adapters.is_empty() {
        println!("no GPU adapter found: {}", engine::gpu::INSTALL_HINT);
        return Ok(ExitCode::from(1));
    }
    for (i, a) in adapters.iter().enumerate() {
        let _ = i;
        println!("{a}");
    }
    Ok(ExitCode::SUCCESS)
}
