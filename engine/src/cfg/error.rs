//! Errors and warnings of cfg parsing, shape inference and overrides.
//! Every message is one line that starts with `file:line:` so a user can jump to it.

use super::model::Origin;

/// Characters of user text a message quotes; the rest is cut (a 100 MB line is not printed).
pub const CLIP_CHARS: usize = 120;

/// `s` cut to [`CLIP_CHARS`] characters, with how much was left out.
pub fn clip(s: &str) -> String {
    clip_to(s, CLIP_CHARS)
}

/// `s` cut to `max` characters, with how much was left out.
pub fn clip_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((end, _)) => format!("{}… ({} more bytes)", &s[..end], s.len() - end),
    }
}

/// Why a cfg cannot be used. `Display` is one line, `file:line: message`.
#[derive(Debug, thiserror::Error)]
pub enum CfgError {
    #[error("{path}: cannot read cfg: {err}")]
    Io { path: String, err: std::io::Error },

    #[error("{origin}: expected `key=value`, found `{}`", clip(.text))]
    MissingEquals { origin: Origin, text: String },

    #[error("{origin}: `{}={}`: {expected}", clip(.key), clip(.value))]
    BadValue { origin: Origin, key: String, value: String, expected: String },

    #[error("{origin}: [{}] needs `{key}=`", clip(.section))]
    MissingKey { origin: Origin, section: String, key: &'static str },

    #[error("{origin}: section [{}] is Darknet's but this engine cannot run it", clip(.section))]
    UnsupportedSection { origin: Origin, section: String },

    #[error("{origin}: unknown section [{}]", clip(.section))]
    UnknownSection { origin: Origin, section: String },

    #[error("{origin}: `{}={}` is not supported by this engine ({why})", clip(.key), clip(.value))]
    UnsupportedKey { origin: Origin, key: String, value: String, why: &'static str },

    /// Layout problems of the file itself (key before any section, no [net], no layers, ...).
    #[error("{origin}: {}", clip_to(.message, 4 * CLIP_CHARS))]
    Structure { origin: Origin, message: String },

    /// Shape inference found an impossible graph.
    #[error("{origin}: layer {index} [{section}]: {}", clip_to(.message, 4 * CLIP_CHARS))]
    Graph { origin: Origin, index: usize, section: &'static str, message: String },

    /// An override (`set_classes`, `set_size`, `set_batch`) cannot be applied.
    #[error("{file}: {}", clip_to(.message, 4 * CLIP_CHARS))]
    Override { file: String, message: String },

    #[error("`{}` is neither a built-in model ({builtins}) nor a readable file", clip(.name))]
    UnknownModel { name: String, builtins: String },
}

impl CfgError {
    /// The file position the error points at, when it has one.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            CfgError::MissingEquals { origin, .. }
            | CfgError::BadValue { origin, .. }
            | CfgError::MissingKey { origin, .. }
            | CfgError::UnsupportedSection { origin, .. }
            | CfgError::UnknownSection { origin, .. }
            | CfgError::UnsupportedKey { origin, .. }
            | CfgError::Structure { origin, .. }
            | CfgError::Graph { origin, .. } => Some(origin),
            CfgError::Io { .. } | CfgError::Override { .. } | CfgError::UnknownModel { .. } => None,
        }
    }
}

/// Something in the cfg that was accepted but that the user should know about
/// (unknown key, Darknet key this engine ignores, duplicate key). The engine never prints these;
/// the caller decides.
#[derive(Clone, Debug, PartialEq)]
pub struct CfgWarning {
    pub origin: Origin,
    pub message: String,
}

impl std::fmt::Display for CfgWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: warning: {}", self.origin, clip_to(&self.message, 4 * CLIP_CHARS))
    }
}
