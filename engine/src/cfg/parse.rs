//! Reading a `.cfg` file: sections (`reader.rs`) → [`ModelCfg`] (shape inference included);
//! built-in names and paths.
//!
//! The lexical rules (comments, duplicates, strict values, unknown keys) are in `reader.rs`.

use std::path::Path;

use super::builtin;
use super::error::{CfgError, CfgWarning};
use super::model::{LayerCfg, ModelCfg, Origin};
use super::reader::{Reader, tokenize};
use super::{layers, net};

/// Parses cfg text. `source` names it in messages (a path or `builtin:NAME.cfg`).
/// The returned model has passed shape inference.
pub fn parse_str(text: &str, source: &str) -> Result<(ModelCfg, Vec<CfgWarning>), CfgError> {
    let mut warnings = Vec::new();
    let mut sections = tokenize(text, source, &mut warnings)?;
    let mut iter = sections.iter_mut();
    let Some(first) = iter.next() else {
        return Err(CfgError::Structure { origin: Origin { file: source.into(), line: 1 }, message: "no sections; a cfg starts with [net]".into() });
    };
    if first.name != "net" && first.name != "network" {
        return Err(CfgError::Structure {
            origin: Origin { file: source.into(), line: first.line },
            message: format!("the first section must be [net], found [{}]", first.name),
        });
    }
    let net = net::parse_net(Reader::new(first, source), &mut warnings)?;
    let mut layers = Vec::new();
    for sec in iter {
        let index = layers.len();
        let origin = Origin { file: source.to_string(), line: sec.line };
        let kind = layers::parse_layer(Reader::new(sec, source), index, &mut warnings)?;
        layers.push(LayerCfg { kind, origin });
    }
    if layers.is_empty() {
        return Err(CfgError::Structure { origin: Origin { file: source.into(), line: net.origin.line }, message: "no layers after [net]".into() });
    }
    let model = ModelCfg { source: source.to_string(), net, layers };
    model.shapes()?;
    Ok((model, warnings))
}

/// Reads and parses a cfg file.
pub fn parse_file(path: &Path) -> Result<(ModelCfg, Vec<CfgWarning>), CfgError> {
    let text = std::fs::read_to_string(path).map_err(|err| CfgError::Io { path: path.display().to_string(), err })?;
    parse_str(&text, &path.display().to_string())
}

/// A built-in model name (`yolov4-tiny`, `yolov4-tiny-3l`, `yolov3-tiny`, `yolov7-tiny`) or a path.
/// Built-in names win over a file of the same name in the working directory.
pub fn load(name_or_path: &str) -> Result<(ModelCfg, Vec<CfgWarning>), CfgError> {
    if let Some(text) = builtin::builtin(name_or_path) {
        return parse_str(text, &format!("builtin:{name_or_path}.cfg"));
    }
    let path = Path::new(name_or_path);
    if path.is_file() {
        return parse_file(path);
    }
    Err(CfgError::UnknownModel { name: name_or_path.to_string(), builtins: builtin::BUILTIN_NAMES.join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_handles_comments_crlf_and_duplicates() {
        let text = "[net]\r\n# c\r\n; c\r\nbatch = 4 # trailing\r\n\r\nbatch=8\r\n[conv]\r\nsize=3";
        let mut w = Vec::new();
        let s = tokenize(text, "t.cfg", &mut w).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].entries.len(), 1);
        assert_eq!(s[0].entries[0].value, "4");
        assert_eq!(s[0].entries[0].line, 4);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].origin.line, 6);
        assert_eq!(s[1].name, "conv");
        assert_eq!(s[1].line, 7);
    }

    #[test]
    fn tokenize_rejects_missing_equals_and_orphan_keys() {
        let mut w = Vec::new();
        let e = tokenize("[net]\nbatch 4\n", "t.cfg", &mut w).unwrap_err();
        assert!(e.to_string().starts_with("t.cfg:2:"), "{e}");
        let e = tokenize("batch=4\n[net]\n", "t.cfg", &mut w).unwrap_err();
        assert!(e.to_string().starts_with("t.cfg:1:"), "{e}");
        let e = tokenize("[net]\nbatch=\n", "t.cfg", &mut w).unwrap_err();
        assert!(e.to_string().starts_with("t.cfg:2:"), "{e}");
    }
}
