//! The one parser of backend names: `cpu`, `gpu`, `gpu:<index>`, `gpu:<adapter name>`. Experiment
//! files (`[backends] list`) and the `--backend` options of `map` and `detect` both use it.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// Which GPU a `gpu` backend uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuSelector {
    /// The first (preferred high-performance) adapter.
    First,
    Index(usize),
    /// Case-insensitive substring of the adapter name.
    Name(String),
}

impl GpuSelector {
    /// The engine's adapter selector (no CPU fallback: a GPU that is not found is an error).
    pub fn adapter_selector(&self) -> engine::gpu::AdapterSelector {
        use engine::gpu::AdapterSelector;
        match self {
            GpuSelector::First => AdapterSelector::default(),
            GpuSelector::Index(i) => AdapterSelector::by_index(*i),
            GpuSelector::Name(n) => AdapterSelector::by_name(n),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum BackendSpec {
    Cpu,
    Gpu(GpuSelector),
}

impl FromStr for BackendSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown backend `{s}` (expected \"cpu\", \"gpu\", \"gpu:<index>\" or \"gpu:<adapter name>\")");
        match s {
            "cpu" => Ok(BackendSpec::Cpu),
            "gpu" => Ok(BackendSpec::Gpu(GpuSelector::First)),
            _ => {
                let sel = s.strip_prefix("gpu:").ok_or_else(bad)?.trim();
                if sel.is_empty() {
                    Err(bad())
                } else if let Ok(i) = sel.parse::<usize>() {
                    Ok(BackendSpec::Gpu(GpuSelector::Index(i)))
                } else {
                    Ok(BackendSpec::Gpu(GpuSelector::Name(sel.to_string())))
                }
            }
        }
    }
}

impl TryFrom<String> for BackendSpec {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// The label used in records and reports: the spelling of the experiment file.
impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendSpec::Cpu => write!(f, "cpu"),
            BackendSpec::Gpu(GpuSelector::First) => write!(f, "gpu"),
            BackendSpec::Gpu(GpuSelector::Index(i)) => write!(f, "gpu:{i}"),
            BackendSpec::Gpu(GpuSelector::Name(n)) => write!(f, "gpu:{n}"),
        }
    }
}
