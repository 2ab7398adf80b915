//! Byte offsets → line:column, and key paths ↔ spans, from toml's spanned document tree.

use super::ExperimentError;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub struct Locator<'t> {
    file: PathBuf,
    text: &'t str,
    /// Best-effort tree: toml recovers what it can from invalid text, so keys near a syntax
    /// error are still known.
    doc: Option<Spanned<DeTable<'t>>>,
}

impl<'t> Locator<'t> {
    pub fn new(file: &Path, text: &'t str) -> Self {
        Locator { file: file.to_path_buf(), text, doc: Some(DeTable::parse_recoverable(text).0) }
    }

    /// 1-based (line, column in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut off = offset.min(self.text.len());
        while !self.text.is_char_boundary(off) {
            off -= 1;
        }
        let before = &self.text[..off];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    pub fn error_at(&self, offset: Option<usize>, key: String, message: String) -> ExperimentError {
        let (line, column) = offset.map_or((1, 1), |o| self.line_col(o));
        // One line, always: toml messages may carry a trailing newline or hints.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        ExperimentError { file: self.file.clone(), line, column, key, message }
    }

    /// A parse or type error from toml, with the key path around its span.
    pub fn toml_error(&self, e: &toml::de::Error) -> ExperimentError {
        let mut start = e.span().map(|s| s.start);
        // An error about one element of an array is reported at the array: point at the element
        // the message quotes (e.g. unknown backend `tpu`).
        if let (Some(o), Some(doc)) = (start, &self.doc)
            && let Some(arr) = array_at(doc.get_ref(), o)
        {
            let quoted: Vec<&str> = e.message().split('`').skip(1).step_by(2).collect();
            if let Some(item) = arr.into_iter().find(|item| {
                matches!(item.get_ref(), DeValue::String(s) if quoted.contains(&s.as_ref()))
            }) {
                start = Some(item.span().start);
            }
        }
        let key = start
            .map(|o| Some(self.key_at(o)).filter(|k| !k.is_empty()).unwrap_or_else(|| self.line_key(o)))
            .unwrap_or_default();
        self.error_at(start, key, e.message().to_string())
    }

    /// For text toml could not parse: `key = ...` on the error's line, under the last `[section]`.
    fn line_key(&self, offset: usize) -> String {
        let (line, _) = self.line_col(offset);
        let lines: Vec<&str> = self.text.lines().collect();
        let Some(text) = lines.get(line - 1) else { return String::new() };
        let Some((k, _)) = text.split_once('=') else { return String::new() };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return String::new();
        }
        let section = lines[..line - 1]
            .iter()
            .rev()
            .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.split(']').next()))
            .map(|s| s.trim_matches(['[', ' ']).to_string());
        match section {
            Some(s) if !s.is_empty() => format!("{s}.{k}"),
            _ => k.to_string(),
        }
    }

    /// An error about `key` ("train.batch"); points at the key, or at its nearest written parent.
    pub fn at(&self, key: &str, message: impl Into<String>) -> ExperimentError {
        let parts: Vec<&str> = key.split('.').collect();
        let offset = (1..=parts.len()).rev().find_map(|n| self.key_span(&parts[..n])).map(|s| s.start);
        self.error_at(offset, key.to_string(), message.into())
    }

    /// Span of the key at `path`, if written in the file.
    pub fn key_span(&self, path: &[&str]) -> Option<Range<usize>> {
        let mut table = self.doc.as_ref()?.get_ref();
        for (i, part) in path.iter().enumerate() {
            let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *part)?;
            if i + 1 == path.len() {
                return Some(k.span());
            }
            match v.get_ref() {
                DeValue::Table(t) => table = t,
                _ => return None,
            }
        }
        None
    }

    /// Dotted path of the innermost key whose key or value span holds `offset`.
    pub fn key_at(&self, offset: usize) -> String {
        let Some(doc) = &self.doc else { return String::new() };
        let mut path = Vec::new();
        walk_table(doc.get_ref(), offset, &mut path);
        path.join(".")
    }
}

/// The array value whose span starts at `offset`.
fn array_at<'a, 'i>(table: &'a DeTable<'i>, offset: usize) -> Option<&'a toml::de::DeArray<'i>> {
    table.iter().find_map(|(_, v)| match v.get_ref() {
        DeValue::Array(a) if v.span().start == offset => Some(a),
        DeValue::Table(t) => array_at(t, offset),
        _ => None,
    })
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (k, v) in table.iter() {
        if contains(&k.span(), offset) {
            path.push(k.get_ref().to_string());
            return true;
        }
        if contains(&v.span(), offset) {
            path.push(k.get_ref().to_string());
            walk_value(v.get_ref(), offset, path);
            return true;
        }
    }
    // Table headers: the value span of a `[section]` may not cover its body; search deeper anyway.
    for (k, v) in table.iter() {
        if let DeValue::Table(t) = v.get_ref() {
            path.push(k.get_ref().to_string());
            if walk_table(t, offset, path) {
                return true;
            }
            path.pop();
        }
    }
    false
}

fn walk_value(v: &DeValue<'_>, offset: usize, path: &mut Vec<String>) {
    match v {
        DeValue::Table(t) => {
            walk_table(t, offset, path);
        }
        DeValue::Array(a) => {
            for (i, item) in a.into_iter().enumerate() {
                if contains(&item.span(), offset) {
                    if let Some(last) = path.last_mut() {
                        last.push_str(&format!("[{i}]"));
                    }
                    walk_value(item.get_ref(), offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}
