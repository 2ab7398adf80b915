//! Deserialisation helpers: value checks done while parsing, so toml reports them with the
//! value's line and column.

use super::{DarknetData, DataSection, DataSource, SyntheticData};
use serde::de::Error;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::PathBuf;

pub fn yes() -> bool {
    true
}

pub fn default_window() -> usize {
    10
}

pub fn default_warmup() -> u64 {
    5
}

pub fn default_out_dir() -> PathBuf {
    PathBuf::from("runs")
}

pub fn all_formats() -> Vec<String> {
    reports::run_dir::FORMAT_NAMES.iter().map(|s| s.to_string()).collect()
}

fn checked<'de, D: Deserializer<'de>>(
    d: D,
    ok: impl Fn(f64) -> bool,
    what: &str,
) -> Result<Option<f64>, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() && ok(v) {
        Ok(Some(v))
    } else {
        Err(D::Error::custom(format!("must be {what}, got {v}")))
    }
}

/// A finite number in [0, 1].
pub fn unit_interval_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    checked(d, |v| (0.0..=1.0).contains(&v), "a number in [0, 1]")
}

/// A finite number in [0, 1).
pub fn unit_interval_open_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    checked(d, |v| (0.0..1.0).contains(&v), "a number in [0, 1)")
}

pub fn positive_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    checked(d, |v| v > 0.0, "a number > 0")
}

pub fn non_negative_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    checked(d, |v| v >= 0.0, "a number >= 0")
}

pub fn at_least_one_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    checked(d, |v| v >= 1.0, "a number >= 1")
}

pub fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if v == 0 { Err(D::Error::custom("must be at least 1")) } else { Ok(v) }
}

pub fn positive_usize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    positive_usize(d).map(Some)
}

pub fn formats<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    let known = reports::run_dir::FORMAT_NAMES;
    for f in &v {
        if !known.contains(&f.as_str()) {
            return Err(D::Error::custom(format!(
                "unknown report format `{f}` (known: {})",
                known.join(", ")
            )));
        }
    }
    Ok(v)
}

/// `[data]` as written; exactly one of `synthetic` and `darknet`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    synthetic: Option<SyntheticData>,
    darknet: Option<PathBuf>,
    letterbox: Option<bool>,
    #[serde(default = "yes")]
    shuffle: bool,
}

impl TryFrom<RawData> for DataSection {
    type Error = String;

    fn try_from(r: RawData) -> Result<Self, String> {
        let source = match (r.synthetic, r.darknet) {
            (Some(s), None) => DataSource::Synthetic(s),
            (None, Some(p)) => DataSource::Darknet(DarknetData { data_file: p, ..Default::default() }),
            (Some(_), Some(_)) => {
                return Err("set only one of `synthetic` and `darknet`, not both".into());
            }
            (None, None) => {
                return Err("needs a dataset: `synthetic = { ... }` or `darknet = \"path/obj.data\"`".into());
            }
        };
        Ok(DataSection { source, letterbox: r.letterbox, shuffle: r.shuffle })
    }
}

/// An augmentation strength written as a whole number ≥ 0 (Darknet's integer) or, for older
/// experiments, a boolean: `false` = 0, `true` = `when_true` (an error where no default exists).
fn strength<'de, D: Deserializer<'de>>(d: D, when_true: Option<u32>, what: &'static str) -> Result<Option<u32>, D::Error> {
    struct V(Option<u32>, &'static str);
    impl serde::de::Visitor<'_> for V {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.1)
        }
        fn visit_bool<E: Error>(self, v: bool) -> Result<u32, E> {
            match (v, self.0) {
                (false, _) => Ok(0),
                (true, Some(n)) => Ok(n),
                (true, None) => Err(E::custom(format!("`true` has no strength here: give {}", self.1))),
            }
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom(format!("must be {}, got {v}", self.1)))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom(format!("must be {}, got {v}", self.1)))
        }
    }
    d.deserialize_any(V(when_true, what)).map(Some)
}

/// Darknet `blur`: 0 off, 1 (or `true`) background blur, N > 1 kernel size.
pub fn blur_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    strength(d, Some(1), "0, 1 (background blur) or a kernel size > 1")
}

/// Darknet `gaussian_noise`: the noise standard deviation in 8-bit units (0 or `false`: off).
pub fn noise_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    strength(d, None, "the noise standard deviation in 8-bit units (a whole number, e.g. 10)")
}
