//! Writes the synthetic demo run to a folder: `cargo run -p reports --example demo_report -- OUT_DIR`.
//! Handy to look at the report (and for ci/render-report.sh) without training anything.

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "runs/demo-report".into());
    let run = reports::demo::synthetic_run(60);
    match reports::write_run(std::path::Path::new(&dir), &run, reports::OutputFormats::all()) {
        Ok(files) => println!("wrote {} files to {dir}; open {dir}/report.html", files.files.len()),
        Err(e) => {
            eprintln!("demo_report: {e}");
            std::process::exit(1);
        }
    }
}
