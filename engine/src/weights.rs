//! Darknet `.weights` files (darknet-spec §f): read, write, size arithmetic.
//!
//! Layout: header (int32 major, minor, revision; `seen` as u64 when major*10+minor >= 2, else u32),
//! then for every [convolutional] layer in cfg order: biases[n]; when batch_normalize:
//! scales[n], rolling_mean[n], rolling_variance[n]; then weights[n*(c/groups)*size*size]
//! ([out][in][ky][kx]), all little-endian f32. Other layer kinds we support carry nothing.
//!
//! Sizes come from the cfg plus each layer's input channel count (from shape inference), which the
//! caller passes as a `&[Option<ConvDims>]` indexed by layer (None for layers without weights).

use std::path::Path;

use crate::cfg::{ConvCfg, LayerCfg, LayerKind};

/// Version this project writes (the same as hank-ai and AlexeyAB).
pub const WRITE_VERSION: (i32, i32, i32) = (0, 2, 5);

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The OS error is part of the message, not a `source()`: printed with its chain (`{:#}`)
    /// it would otherwise appear twice.
    #[error("{file}: {error}")]
    Io {
        file: String,
        error: std::io::Error,
    },
    #[error("{file}: {found} bytes is too short for a .weights header (needs {needed})")]
    ShortHeader {
        file: String,
        found: usize,
        needed: usize,
    },
    #[error(
        "{file}: weights file has {found} bytes but the cfg needs {expected} \
         ({what}; header {header} bytes + 4 bytes per float)"
    )]
    SizeMismatch {
        file: String,
        expected: usize,
        found: usize,
        header: usize,
        what: String,
    },
    #[error(
        "{file}: weights file has {found} bytes, which does not end after any convolutional layer \
         of the cfg (nearest: {below} bytes after layer {below_layer}, {above})"
    )]
    NoLayerBoundary {
        file: String,
        found: usize,
        below: usize,
        below_layer: String,
        above: String,
    },
    #[error("{file}: layer {layer}: {what} has {found} values, expected {expected}")]
    ParamLength {
        file: String,
        layer: usize,
        what: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("{file}: layer {layer} is convolutional but no parameters were given for it")]
    MissingParams { file: String, layer: usize },
    #[error("{file}: header says version {major}.{minor}.{revision}; Darknet .weights files are version 0.x (this is not a .weights file, or a damaged one)")]
    Version { file: String, major: i32, minor: i32, revision: i32 },
    #[error("{file}: cutoff {cutoff} is beyond the {layers} layers of the cfg")]
    BadCutoff {
        file: String,
        cutoff: usize,
        layers: usize,
    },
}

/// The 16- or 20-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightsHeader {
    pub major: i32,
    pub minor: i32,
    pub revision: i32,
    /// Images seen in training (= iteration · batch · subdivisions).
    pub seen: u64,
}

impl WeightsHeader {
    /// Darknet stores `seen` as u64 from version 0.2 on.
    pub fn seen_is_64bit(&self) -> bool {
        self.major * 10 + self.minor >= 2
    }
    pub fn byte_len(&self) -> usize {
        if self.seen_is_64bit() { 20 } else { 16 }
    }
}

/// What a [convolutional] layer needs to know to size its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub filters: usize,
    /// Input channels of this layer (from shape inference).
    pub c_in: usize,
    pub size: usize,
    pub groups: usize,
    pub batch_normalize: bool,
}

impl ConvDims {
    pub fn from_cfg(conv: &ConvCfg, c_in: usize) -> Self {
        ConvDims {
            filters: conv.filters,
            c_in,
            size: conv.size,
            groups: conv.groups.max(1),
            batch_normalize: conv.batch_normalize,
        }
    }
    pub fn weight_count(&self) -> usize {
        self.filters * (self.c_in / self.groups) * self.size * self.size
    }
    /// Floats this layer occupies in the file.
    pub fn float_count(&self) -> usize {
        let per_filter = if self.batch_normalize { 4 } else { 1 };
        per_filter * self.filters + self.weight_count()
    }
}

/// Per-layer dims from parsed layers and their input channel counts (one per layer).
pub fn conv_dims(layers: &[LayerCfg], input_channels: &[usize]) -> Vec<Option<ConvDims>> {
    layers
        .iter()
        .zip(input_channels)
        .map(|(l, &c)| match &l.kind {
            LayerKind::Convolutional(conv) => Some(ConvDims::from_cfg(conv, c)),
            _ => None,
        })
        .collect()
}

/// Parameters of one convolutional layer, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvParams {
    pub biases: Vec<f32>,
    /// BN gamma; present iff batch_normalize.
    pub scales: Option<Vec<f32>>,
    pub rolling_mean: Option<Vec<f32>>,
    pub rolling_variance: Option<Vec<f32>>,
    /// [out][in/groups][ky][kx].
    pub weights: Vec<f32>,
}

impl ConvParams {
    /// All zeros with the right lengths (BN variance too; callers initialise as they wish).
    pub fn zeros(d: &ConvDims) -> Self {
        let bn = || d.batch_normalize.then(|| vec![0.0; d.filters]);
        ConvParams {
            biases: vec![0.0; d.filters],
            scales: bn(),
            rolling_mean: bn(),
            rolling_variance: bn(),
            weights: vec![0.0; d.weight_count()],
        }
    }
}

/// Where non-finite values (NaN, ±Inf) sit in a set of parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonFinite {
    /// How many values are not finite, over every layer.
    pub count: usize,
    /// The first layer (index in the cfg) and tensor holding one.
    pub layer: usize,
    pub tensor: &'static str,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} non-finite value(s) (NaN or Inf), the first in layer {} {}", self.count, self.layer, self.tensor)
    }
}

impl ConvParams {
    /// The tensors in file order with Darknet's names.
    pub fn tensors(&self) -> impl Iterator<Item = (&'static str, &[f32])> {
        [
            ("biases", Some(self.biases.as_slice())),
            ("scales", self.scales.as_deref()),
            ("rolling_mean", self.rolling_mean.as_deref()),
            ("rolling_variance", self.rolling_variance.as_deref()),
            ("weights", Some(self.weights.as_slice())),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
    }
}

/// The non-finite values of per-layer parameters (as `conv_params` or a file gives them), if any.
pub fn nonfinite(layers: &[Option<ConvParams>]) -> Option<NonFinite> {
    let mut found: Option<NonFinite> = None;
    for (layer, p) in layers.iter().enumerate() {
        let Some(p) = p else { continue };
        for (tensor, values) in p.tensors() {
            let n = values.iter().filter(|v| !v.is_finite()).count();
            if n > 0 {
                match &mut found {
                    Some(f) => f.count += n,
                    None => found = Some(NonFinite { count: n, layer, tensor }),
                }
            }
        }
    }
    found
}

/// Which layers a read covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// The file must hold exactly every layer of the cfg.
    All,
    /// Exactly the layers with index < n (`darknet partial … n`).
    UpTo(usize),
    /// Any prefix that ends after a layer with weights, e.g. yolov4-tiny.conv.29 loaded with the
    /// full cfg (Darknet stops at end-of-file there). The longest matching prefix is taken.
    Prefix,
}

/// A loaded file.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsFile {
    pub header: WeightsHeader,
    /// One entry per cfg layer; Some for convolutional layers that the file covered.
    pub layers: Vec<Option<ConvParams>>,
    /// Layers with index < this were covered by the file.
    pub cutoff: usize,
}

/// Floats needed by layers with index < cutoff.
pub fn float_count(dims: &[Option<ConvDims>], cutoff: usize) -> usize {
    dims.iter()
        .take(cutoff)
        .flatten()
        .map(ConvDims::float_count)
        .sum()
}

/// File size for layers < cutoff with the 20-byte header this project writes.
pub fn expected_file_size(dims: &[Option<ConvDims>], cutoff: usize) -> usize {
    20 + 4 * float_count(dims, cutoff)
}

/// Read a .weights file. `dims` has one entry per cfg layer.
pub fn read_weights(
    path: &Path,
    dims: &[Option<ConvDims>],
    extent: Extent,
) -> Result<WeightsFile, WeightsError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| WeightsError::Io {
        file: file.clone(),
        error,
    })?;
    parse_weights(&bytes, &file, dims, extent)
}

/// Parse the bytes of a .weights file; `file` names it in errors.
pub fn parse_weights(
    bytes: &[u8],
    file: &str,
    dims: &[Option<ConvDims>],
    extent: Extent,
) -> Result<WeightsFile, WeightsError> {
    let file = file.to_string();
    if bytes.len() < 16 {
        return Err(WeightsError::ShortHeader {
            file,
            found: bytes.len(),
            needed: 16,
        });
    }
    let i32_at =
        |o: usize| i32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let (major, minor, revision) = (i32_at(0), i32_at(4), i32_at(8));
    let mut header = WeightsHeader {
        major,
        minor,
        revision,
        seen: 0,
    };
    // Darknet has only ever written major version 0 (0.1, 0.2); anything else is not its format.
    if major != 0 || !(0..1000).contains(&minor) || !(0..1000).contains(&revision) {
        return Err(WeightsError::Version { file, major, minor, revision });
    }
    let header_len = header.byte_len();
    if bytes.len() < header_len {
        return Err(WeightsError::ShortHeader {
            file,
            found: bytes.len(),
            needed: header_len,
        });
    }
    header.seen = if header.seen_is_64bit() {
        u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"))
    } else {
        u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as u64
    };
    let found = bytes.len();
    let size_for = |cutoff: usize| header_len + 4 * float_count(dims, cutoff);
    let n_conv = |cutoff: usize| dims.iter().take(cutoff).flatten().count();

    let cutoff = match extent {
        Extent::All | Extent::UpTo(_) => {
            let cutoff = if let Extent::UpTo(n) = extent {
                n
            } else {
                dims.len()
            };
            if cutoff > dims.len() {
                return Err(WeightsError::BadCutoff {
                    file,
                    cutoff,
                    layers: dims.len(),
                });
            }
            let expected = size_for(cutoff);
            if found != expected {
                let what = format!(
                    "layers 0..{} of {}, {} convolutional",
                    cutoff,
                    dims.len(),
                    n_conv(cutoff)
                );
                return Err(WeightsError::SizeMismatch {
                    file,
                    expected,
                    found,
                    header: header_len,
                    what,
                });
            }
            cutoff
        }
        Extent::Prefix => {
            // Candidate ends: after each layer with weights (cutoff = index + 1), plus 0.
            let mut best_below = (header_len, 0usize);
            let mut above: Option<(usize, usize)> = None;
            let mut exact = None;
            for cutoff in 0..=dims.len() {
                if cutoff > 0 && dims[cutoff - 1].is_none() {
                    continue;
                }
                let s = size_for(cutoff);
                if s == found {
                    exact = Some(cutoff); // keep the longest (later cutoffs of equal size)
                } else if s < found {
                    best_below = (s, cutoff);
                } else if above.is_none() {
                    above = Some((s, cutoff));
                }
            }
            match exact {
                // A layer-less tail (route, yolo) costs no bytes: count the file as covering them.
                Some(c) => extend_past_weightless(dims, c),
                None => {
                    let below_layer = match best_below.1 {
                        0 => "none (header only)".to_string(),
                        c => (c - 1).to_string(),
                    };
                    let above = match above {
                        Some((s, c)) => format!("{s} bytes after layer {}", c - 1),
                        None => format!("the whole cfg needs only {}", size_for(dims.len())),
                    };
                    return Err(WeightsError::NoLayerBoundary {
                        file,
                        found,
                        below: best_below.0,
                        below_layer,
                        above,
                    });
                }
            }
        }
    };

    let mut reader = FloatReader {
        bytes,
        pos: header_len,
    };
    let layers = dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(d) if i < cutoff => Some(reader.conv(d)),
            _ => None,
        })
        .collect();
    debug_assert_eq!(reader.pos, bytes.len());
    Ok(WeightsFile {
        header,
        layers,
        cutoff,
    })
}

fn extend_past_weightless(dims: &[Option<ConvDims>], mut cutoff: usize) -> usize {
    while cutoff < dims.len() && dims[cutoff].is_none() {
        cutoff += 1;
    }
    cutoff
}

struct FloatReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl FloatReader<'_> {
    fn take(&mut self, n: usize) -> Vec<f32> {
        let end = self.pos + 4 * n;
        let v = self.bytes[self.pos..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.pos = end;
        v
    }
    fn conv(&mut self, d: &ConvDims) -> ConvParams {
        let n = d.filters;
        let biases = self.take(n);
        let (scales, rolling_mean, rolling_variance) = if d.batch_normalize {
            (Some(self.take(n)), Some(self.take(n)), Some(self.take(n)))
        } else {
            (None, None, None)
        };
        let weights = self.take(d.weight_count());
        ConvParams {
            biases,
            scales,
            rolling_mean,
            rolling_variance,
            weights,
        }
    }
}

/// Encode layers with index < cutoff (all when None) with header 0.2.5 and u64 `seen`.
/// `params` has one entry per cfg layer, like `dims`; `file` names the target in errors.
pub fn encode_weights(
    file: &str,
    seen: u64,
    dims: &[Option<ConvDims>],
    params: &[Option<ConvParams>],
    cutoff: Option<usize>,
) -> Result<Vec<u8>, WeightsError> {
    let cutoff = cutoff.unwrap_or(dims.len());
    if cutoff > dims.len() {
        return Err(WeightsError::BadCutoff {
            file: file.into(),
            cutoff,
            layers: dims.len(),
        });
    }
    let mut out = Vec::with_capacity(expected_file_size(dims, cutoff));
    let (major, minor, revision) = WRITE_VERSION;
    for v in [major, minor, revision] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&seen.to_le_bytes());
    for (layer, d) in dims.iter().enumerate().take(cutoff) {
        let Some(d) = d else { continue };
        let p = params
            .get(layer)
            .and_then(Option::as_ref)
            .ok_or(WeightsError::MissingParams {
                file: file.into(),
                layer,
            })?;
        let check = |what: &'static str, v: Option<&Vec<f32>>, expected: usize| {
            let found = v.map_or(0, Vec::len);
            if found != expected {
                return Err(WeightsError::ParamLength {
                    file: file.into(),
                    layer,
                    what,
                    found,
                    expected,
                });
            }
            Ok(())
        };
        let n = d.filters;
        let bn_len = if d.batch_normalize { n } else { 0 };
        check("biases", Some(&p.biases), n)?;
        check("scales", p.scales.as_ref(), bn_len)?;
        check("rolling_mean", p.rolling_mean.as_ref(), bn_len)?;
        check("rolling_variance", p.rolling_variance.as_ref(), bn_len)?;
        check("weights", Some(&p.weights), d.weight_count())?;
        let mut put = |v: &[f32]| {
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        };
        put(p.biases.as_slice());
        if d.batch_normalize {
            for v in [&p.scales, &p.rolling_mean, &p.rolling_variance]
                .into_iter()
                .flatten()
            {
                put(v.as_slice());
            }
        }
        put(p.weights.as_slice());
    }
    Ok(out)
}

/// Write a .weights file (see `encode_weights`). Writes a sibling temporary file and renames it,
/// so an interrupted checkpoint never leaves a truncated file under the real name.
pub fn write_weights(
    path: &Path,
    seen: u64,
    dims: &[Option<ConvDims>],
    params: &[Option<ConvParams>],
    cutoff: Option<usize>,
) -> Result<(), WeightsError> {
    let file = path.display().to_string();
    let bytes = encode_weights(&file, seen, dims, params, cutoff)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = std::path::PathBuf::from(tmp);
    let io = |error| WeightsError::Io {
        file: file.clone(),
        error,
    };
    // A failed write (disk full) leaves no `.part` file behind.
    if let Err(e) = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}
