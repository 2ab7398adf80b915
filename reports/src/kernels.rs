//! The kernels table: device time per layer × phase × kernel (from GPU timestamps), written by
//! `runner bench` and `runner run` as `tables/kernels.{parquet,csv}` (reports/SCHEMA.md).

use crate::{ReportError, tables};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const KERNEL_COLUMNS: &[&str] =
    &["backend", "layer", "layer_type", "phase", "kernel", "dispatches", "gpu_s", "gflops", "gbytes_per_s"];

/// One row: the launches of one kernel for one layer and phase of one backend, per training step
/// (means over the measured steps).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelRecord {
    pub backend: String,
    /// Layer index in the cfg; -1 for work that belongs to no one layer (gradient reset, update).
    pub layer: i64,
    pub layer_type: String,
    /// "forward", "loss", "backward", "update" or "other".
    pub phase: String,
    pub kernel: String,
    /// Launches per step.
    pub dispatches: f64,
    /// Device seconds per step.
    pub gpu_s: f64,
    /// Achieved GFLOP/s of the counted FLOPs (0 for kernels counted as doing no arithmetic).
    pub gflops: f64,
    /// Achieved GB/s of the counted (least) traffic.
    pub gbytes_per_s: f64,
}

pub fn kernels_frame(rows: &[KernelRecord]) -> Result<DataFrame, ReportError> {
    let f = |g: fn(&KernelRecord) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let s = |g: fn(&KernelRecord) -> &str| rows.iter().map(g).collect::<Vec<&str>>();
    Ok(DataFrame::new(
        rows.len(),
        vec![
            Column::new("backend".into(), s(|r| &r.backend)),
            Column::new("layer".into(), rows.iter().map(|r| r.layer).collect::<Vec<i64>>()),
            Column::new("layer_type".into(), s(|r| &r.layer_type)),
            Column::new("phase".into(), s(|r| &r.phase)),
            Column::new("kernel".into(), s(|r| &r.kernel)),
            Column::new("dispatches".into(), f(|r| r.dispatches)),
            Column::new("gpu_s".into(), f(|r| r.gpu_s)),
            Column::new("gflops".into(), f(|r| r.gflops)),
            Column::new("gbytes_per_s".into(), f(|r| r.gbytes_per_s)),
        ],
    )?)
}

pub fn kernels_from_frame(df: &DataFrame) -> Result<Vec<KernelRecord>, ReportError> {
    let col_f = |n: &str| -> Result<Vec<f64>, ReportError> {
        let c = df.column(n)?.cast(&DataType::Float64)?;
        Ok(c.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    };
    let col_s = |n: &str| -> Result<Vec<String>, ReportError> {
        let c = df.column(n)?.cast(&DataType::String)?;
        Ok(c.str()?.iter().map(|v| v.unwrap_or("").to_string()).collect())
    };
    let layer = df.column("layer")?.cast(&DataType::Int64)?;
    let layer: Vec<i64> = layer.i64()?.iter().map(|v| v.unwrap_or(-1)).collect();
    let (backend, layer_type, phase, kernel) = (col_s("backend")?, col_s("layer_type")?, col_s("phase")?, col_s("kernel")?);
    let (dispatches, gpu_s, gflops, gbs) = (col_f("dispatches")?, col_f("gpu_s")?, col_f("gflops")?, col_f("gbytes_per_s")?);
    Ok((0..df.height())
        .map(|i| KernelRecord {
            backend: backend[i].clone(),
            layer: layer[i],
            layer_type: layer_type[i].clone(),
            phase: phase[i].clone(),
            kernel: kernel[i].clone(),
            dispatches: dispatches[i],
            gpu_s: gpu_s[i],
            gflops: gflops[i],
            gbytes_per_s: gbs[i],
        })
        .collect())
}

/// Writes `dir/kernels.parquet` and/or `dir/kernels.csv`; returns the files written.
pub fn write_kernels(dir: &Path, rows: &[KernelRecord], parquet: bool, csv: bool) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io { path: dir.display().to_string(), error: e })?;
    let mut df = kernels_frame(rows)?;
    let mut files = Vec::new();
    if parquet {
        let path = dir.join("kernels.parquet");
        tables::write_parquet(&mut df, &path)?;
        files.push(path);
    }
    if csv {
        let path = dir.join("kernels.csv");
        tables::write_csv(&mut df, &path)?;
        files.push(path);
    }
    Ok(files)
}

/// Reads `dir/kernels.parquet` (or the CSV); `None` when the run has no kernels table.
pub fn read_kernels(dir: &Path) -> Result<Option<Vec<KernelRecord>>, ReportError> {
    if !dir.join("kernels.parquet").exists() && !dir.join("kernels.csv").exists() {
        return Ok(None);
    }
    kernels_from_frame(&tables::read_table(dir, "kernels")?).map(Some)
}

/// Device seconds per step of each layer, split into forward (forward + loss) and backward
/// (backward), for the per-layer chart: (layer, layer_type, forward_s, backward_s), layers in
/// order. Rows of `backend` only.
pub fn layer_times(rows: &[KernelRecord], backend: &str) -> Vec<(i64, String, f64, f64)> {
    let mut out: Vec<(i64, String, f64, f64)> = Vec::new();
    for r in rows.iter().filter(|r| r.backend == backend && r.layer >= 0) {
        let at = match out.iter().position(|o| o.0 == r.layer) {
            Some(i) => i,
            None => {
                out.push((r.layer, r.layer_type.clone(), 0.0, 0.0));
                out.len() - 1
            }
        };
        match r.phase.as_str() {
            "forward" | "loss" => out[at].2 += r.gpu_s,
            "backward" => out[at].3 += r.gpu_s,
            _ => {}
        }
    }
    out.sort_by_key(|o| o.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(backend: &str, layer: i64, phase: &str, kernel: &str, s: f64) -> KernelRecord {
        KernelRecord {
            backend: backend.into(),
            layer,
            layer_type: "conv".into(),
            phase: phase.into(),
            kernel: kernel.into(),
            dispatches: 1.0,
            gpu_s: s,
            gflops: 2.5,
            gbytes_per_s: 0.5,
        }
    }

    #[test]
    fn parquet_and_csv_round_trip() {
        let dir = std::env::temp_dir().join(format!("kernels-rt-{}", std::process::id()));
        let rows = vec![row("gpu", 0, "forward", "conv_forward", 0.001), row("gpu", -1, "update", "sgd_update", 0.0002)];
        let files = write_kernels(&dir, &rows, true, true).expect("write");
        assert_eq!(files.len(), 2);
        assert_eq!(read_kernels(&dir).expect("read"), Some(rows.clone()));
        std::fs::remove_file(dir.join("kernels.parquet")).expect("rm");
        assert_eq!(read_kernels(&dir).expect("read csv"), Some(rows));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn layer_times_split_forward_and_backward() {
        let rows = vec![
            row("gpu", 2, "forward", "a", 1.0),
            row("gpu", 2, "backward", "b", 2.0),
            row("gpu", 1, "loss", "c", 0.5),
            row("gpu", -1, "update", "d", 9.0),
            row("gpu:1", 1, "forward", "a", 7.0),
        ];
        let t = layer_times(&rows, "gpu");
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].0, t[0].2, t[0].3), (1, 0.5, 0.0));
        assert_eq!((t[1].0, t[1].2, t[1].3), (2, 1.0, 2.0));
    }
}
