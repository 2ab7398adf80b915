//! Errors and warnings of cfg parsing, shape inference and overrides.
//! Every message is one line that starts with `file:line:` so a user can jump to it.

use super::model::Origin;

/// Why a cfg cannot be used. `Display` is one line, `file:line: message`.
#[derive(Debug, thiserror::Error)]
pub enum CfgError {
    #[error("{path}: cannot read cfg: {err}")]
    Io { path: String, err: std::io::Error },

    #[error("{origin}: expected `key=value`, found `{text}`")]
    MissingEquals { origin: Origin, text: String },

    #[error("{origin}: `{key}={value}`: {expected}")]
    BadValue { origin: Origin, key: String, value: String, expected: String },

    #[error("{origin}: [{section}] needs `{key}=`")]
    MissingKey { origin: Origin, section: String, key: &'static str },

    #[error("{origin}: section [{section}] is Darknet's but this engine cannot run it")]
    UnsupportedSection { origin: Origin, section: String },

    #[error("{origin}: unknown section [{section}]")]
    UnknownSection { origin: Origin, section: String },

    #[error("{origin}: `{key}={value}` is not supported by this engine ({why})")]
    UnsupportedKey { origin: Origin, key: String, value: String, why: &'static str },

    /// Layout problems of the file itself (key before any section, no [net], no layers, ...).
    #[error("{origin}: {message}")]
    Structure { origin: Origin, message: String },

    /// Shape inference found an impossible graph.
    #[error("{origin}: layer {index} [{section}]: {message}")]
    Graph { origin: Origin, index: usize, section: &'static str, message: String },

    /// An override (`set_classes`, `set_size`, `set_batch`) cannot be applied.
    #[error("{file}: {message}")]
    Override { file: String, message: String },

    #[error("`{name}` is neither a built-in model ({builtins}) nor a readable file")]
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
        write!(f, "{}: warning: {}", self.origin, self.message)
    }
}
