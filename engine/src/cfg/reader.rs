//! The lexical half of reading a `.cfg`: lines → sections of `key=value` entries, and typed,
//! tracked access to one section's entries ([`Reader`]), which the section parsers (`net.rs`,
//! `layers.rs`, `yolo.rs`) use. `parse.rs` puts the sections together into a [`super::ModelCfg`].
//!
//! Lexical rules (Darknet's `read_cfg`/`read_option`, made strict):
//! - `#` or `;` starts a comment (whole line or after a value); blank lines and CRLF are fine;
//!   whitespace around `=` and around list items is ignored.
//! - Keys are case-sensitive, as in Darknet (`B1`, `B2` are upper-case, everything else lower).
//! - A duplicated key in one section: the FIRST value wins, as Darknet's `option_find` returns the
//!   first match; the later line gets a warning.
//! - A line without `=`, an empty value, or a value that is not a number where one is needed is an
//!   error (Darknet only prints and goes on with `atoi` garbage).
//! - Unknown keys, and Darknet keys this engine does not use, are warnings. Darknet keys that would
//!   change the computation if set to a non-default value (e.g. `dilation`, `stopbackward`) are
//!   errors when so set, because silently ignoring them would train a different network.

use super::error::{CfgError, CfgWarning};
use super::model::Origin;

/// One `key=value` line.
#[derive(Debug)]
pub(crate) struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
    pub used: bool,
}

/// One `[section]` with its entries (duplicates already removed).
#[derive(Debug)]
pub(crate) struct RawSection {
    pub name: String,
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// Splits the text into sections. Duplicate keys produce warnings.
pub(crate) fn tokenize(text: &str, file: &str, warnings: &mut Vec<CfgWarning>) -> Result<Vec<RawSection>, CfgError> {
    let mut sections: Vec<RawSection> = Vec::new();
    for (i, raw_line) in text.lines().enumerate() {
        let line_no = i + 1;
        let origin = || Origin { file: file.to_string(), line: line_no };
        // `lines()` leaves the '\r' of CRLF files; comments may follow a value.
        let line = raw_line.trim_end_matches('\r');
        let line = match line.find(['#', ';']) {
            Some(p) => &line[..p],
            None => line,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(CfgError::Structure { origin: origin(), message: format!("malformed section header `{line}`") });
            };
            sections.push(RawSection { name: name.trim().to_string(), line: line_no, entries: Vec::new() });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(CfgError::MissingEquals { origin: origin(), text: line.to_string() });
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(CfgError::MissingEquals { origin: origin(), text: line.to_string() });
        }
        if value.is_empty() {
            return Err(CfgError::BadValue { origin: origin(), key: key.to_string(), value: String::new(), expected: "empty value".into() });
        }
        let Some(section) = sections.last_mut() else {
            return Err(CfgError::Structure { origin: origin(), message: format!("`{key}=` before any [section]") });
        };
        if let Some(first) = section.entries.iter().find(|e| e.key == key) {
            warnings.push(CfgWarning {
                origin: origin(),
                message: format!("duplicate key `{key}` in [{}]; the first value (line {}) is used, as in Darknet", section.name, first.line),
            });
            continue;
        }
        section.entries.push(Entry { key: key.to_string(), value: value.to_string(), line: line_no, used: false });
    }
    Ok(sections)
}

/// Typed access to one section's entries. Every lookup marks the key used; [`Reader::finish`]
/// turns the rest into warnings.
pub(crate) struct Reader<'a> {
    pub sec: &'a mut RawSection,
    pub file: &'a str,
}

impl<'a> Reader<'a> {
    pub fn new(sec: &'a mut RawSection, file: &'a str) -> Self {
        Reader { sec, file }
    }

    /// Origin of the section header.
    pub fn origin(&self) -> Origin {
        Origin { file: self.file.to_string(), line: self.sec.line }
    }

    pub fn origin_at(&self, line: usize) -> Origin {
        Origin { file: self.file.to_string(), line }
    }

    /// The raw value and its line, if present.
    pub fn get(&mut self, key: &str) -> Option<(String, usize)> {
        let e = self.sec.entries.iter_mut().find(|e| e.key == key)?;
        e.used = true;
        Some((e.value.clone(), e.line))
    }

    pub fn bad(&self, key: &str, value: &str, line: usize, expected: impl Into<String>) -> CfgError {
        CfgError::BadValue { origin: self.origin_at(line), key: key.to_string(), value: value.to_string(), expected: expected.into() }
    }

    pub fn missing(&self, key: &'static str) -> CfgError {
        CfgError::MissingKey { origin: self.origin(), section: self.sec.name.clone(), key }
    }

    pub fn opt_i64(&mut self, key: &str) -> Result<Option<i64>, CfgError> {
        match self.get(key) {
            None => Ok(None),
            Some((v, line)) => v.parse::<i64>().map(Some).map_err(|_| self.bad(key, &v, line, "expected an integer")),
        }
    }

    pub fn opt_usize(&mut self, key: &str) -> Result<Option<usize>, CfgError> {
        match self.get(key) {
            None => Ok(None),
            Some((v, line)) => v.parse::<usize>().map(Some).map_err(|_| self.bad(key, &v, line, "expected a non-negative integer")),
        }
    }

    pub fn usize(&mut self, key: &str, default: usize) -> Result<usize, CfgError> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    /// A strictly positive integer.
    pub fn positive(&mut self, key: &str, default: usize) -> Result<usize, CfgError> {
        match self.get(key) {
            None => Ok(default),
            Some((v, line)) => match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(self.bad(key, &v, line, "expected a positive integer")),
            },
        }
    }

    pub fn u64(&mut self, key: &str, default: u64) -> Result<u64, CfgError> {
        match self.get(key) {
            None => Ok(default),
            Some((v, line)) => v.parse::<u64>().map_err(|_| self.bad(key, &v, line, "expected a non-negative integer")),
        }
    }

    pub fn opt_f32(&mut self, key: &str) -> Result<Option<f32>, CfgError> {
        match self.get(key) {
            None => Ok(None),
            Some((v, line)) => match v.parse::<f32>() {
                Ok(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.bad(key, &v, line, "expected a number")),
            },
        }
    }

    pub fn f32(&mut self, key: &str, default: f32) -> Result<f32, CfgError> {
        Ok(self.opt_f32(key)?.unwrap_or(default))
    }

    /// Darknet flags are integers; any non-zero value is on.
    pub fn flag(&mut self, key: &str, default: bool) -> Result<bool, CfgError> {
        Ok(self.opt_i64(key)?.map(|v| v != 0).unwrap_or(default))
    }

    pub fn string(&mut self, key: &str) -> Option<(String, usize)> {
        self.get(key)
    }

    /// A comma-separated list parsed item by item.
    pub fn list<T: std::str::FromStr>(&mut self, key: &str, what: &str) -> Result<Option<(Vec<T>, usize)>, CfgError> {
        let Some((v, line)) = self.get(key) else { return Ok(None) };
        let mut out = Vec::new();
        for item in v.split(',') {
            let item = item.trim();
            if item.is_empty() {
                // Darknet tolerates a trailing comma in lists such as anchors.
                continue;
            }
            out.push(item.parse::<T>().map_err(|_| self.bad(key, &v, line, format!("expected a comma-separated list of {what}")))?);
        }
        if out.is_empty() {
            return Err(self.bad(key, &v, line, format!("expected a comma-separated list of {what}")));
        }
        Ok(Some((out, line)))
    }

    /// Errors if an integer key Darknet knows is set to anything but `default` — the engine cannot
    /// honour it, and ignoring it would silently change the network.
    pub fn reject_int_unless(&mut self, key: &str, default: i64, why: &'static str) -> Result<(), CfgError> {
        if let Some((v, line)) = self.get(key) {
            match v.parse::<i64>() {
                Ok(x) if x == default => {}
                Ok(_) => return Err(CfgError::UnsupportedKey { origin: self.origin_at(line), key: key.into(), value: v, why }),
                Err(_) => return Err(self.bad(key, &v, line, "expected an integer")),
            }
        }
        Ok(())
    }

    /// Float version of [`Reader::reject_int_unless`].
    pub fn reject_f32_unless(&mut self, key: &str, default: f32, why: &'static str) -> Result<(), CfgError> {
        if let Some((v, line)) = self.get(key) {
            match v.parse::<f32>() {
                Ok(x) if x == default => {}
                Ok(_) => return Err(CfgError::UnsupportedKey { origin: self.origin_at(line), key: key.into(), value: v, why }),
                Err(_) => return Err(self.bad(key, &v, line, "expected a number")),
            }
        }
        Ok(())
    }

    /// Per-layer keys Darknet reads for every layer (parse_network_cfg).
    pub fn common_layer_keys(&mut self) -> Result<(), CfgError> {
        self.reject_int_unless("stopbackward", 0, "partial back-propagation")?;
        self.reject_int_unless("dont_update", 0, "frozen layers")?;
        self.reject_int_unless("burnin_update", 0, "frozen layers")?;
        self.reject_int_unless("train_only_bn", 0, "frozen layers")?;
        self.reject_int_unless("onlyforward", 0, "forward-only layers")?;
        self.reject_f32_unless("learning_rate", 1.0, "per-layer learning-rate scale")?;
        self.reject_f32_unless("clip", 0.0, "output clipping")?;
        Ok(())
    }

    /// Warnings for every entry nobody read: `ignored` lists Darknet keys that are accepted but
    /// have no effect here; anything else is unknown.
    pub fn finish(self, ignored: &[&str], warnings: &mut Vec<CfgWarning>) {
        const COMMON_IGNORED: [&str; 5] = ["dontload", "dontloadscales", "dontsave", "stream", "wait_stream"];
        for e in self.sec.entries.iter().filter(|e| !e.used) {
            let origin = Origin { file: self.file.to_string(), line: e.line };
            let message = if ignored.contains(&e.key.as_str()) || COMMON_IGNORED.contains(&e.key.as_str()) {
                format!("`{}` in [{}] has no effect in this engine; ignored", e.key, self.sec.name)
            } else {
                format!("unknown key `{}` in [{}]; ignored", e.key, self.sec.name)
            };
            warnings.push(CfgWarning { origin, message });
        }
    }
}
