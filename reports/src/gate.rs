//! Gate outputs: gate.json, JUnit XML (one testcase per gate) and a Markdown summary.

use crate::SCHEMA_VERSION;
use crate::records::{GateResult, RunSummary};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub schema_version: u32,
    /// True when every gate passed (and there was at least one).
    pub pass: bool,
    pub gates: Vec<GateResult>,
}

impl GateReport {
    pub fn new(gates: Vec<GateResult>) -> Self {
        // No gate at all is not a pass: a run that checked nothing proves nothing.
        let pass = !gates.is_empty() && gates.iter().all(|g| g.pass);
        GateReport { schema_version: SCHEMA_VERSION, pass, gates }
    }

    pub fn failures(&self) -> usize {
        self.gates.iter().filter(|g| !g.pass).count()
    }

    /// JUnit XML as CI systems read it: one `<testcase>` per gate, `<failure>` on a failed one.
    pub fn junit_xml(&self, suite: &str) -> String {
        let suite = if suite.is_empty() { "parity" } else { suite };
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            s,
            "<testsuites name=\"{0}\" tests=\"{1}\" failures=\"{2}\">\n  <testsuite name=\"{0}\" tests=\"{1}\" failures=\"{2}\" errors=\"0\" skipped=\"0\">",
            xml_escape(suite),
            self.gates.len(),
            self.failures()
        );
        for g in &self.gates {
            let _ = write!(
                s,
                "    <testcase classname=\"{}.gates\" name=\"{}\">",
                xml_escape(suite),
                xml_escape(&g.name)
            );
            let line = format!("measured {} limit {}: {}", fmt_num(g.measured), fmt_num(g.limit), g.detail);
            if g.pass {
                let _ = writeln!(s, "<system-out>{}</system-out></testcase>", xml_escape(&line));
            } else {
                let _ = writeln!(
                    s,
                    "\n      <failure message=\"{0}\" type=\"GateFailed\">{0}</failure>\n    </testcase>",
                    xml_escape(&line)
                );
            }
        }
        s.push_str("  </testsuite>\n</testsuites>\n");
        s
    }

    /// Markdown: verdict line, then one table row per gate.
    pub fn markdown(&self, summary: &RunSummary) -> String {
        let mut s = String::new();
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        let _ = writeln!(s, "# {verdict}: {}\n", md_escape(&summary.experiment_name));
        let _ = writeln!(
            s,
            "{} of {} gates passed. Commit `{}`, experiment hash `{}`.\n",
            self.gates.len() - self.failures(),
            self.gates.len(),
            summary.git_commit,
            summary.experiment_hash
        );
        s.push_str("| gate | result | measured | limit | detail |\n|---|---|---:|---:|---|\n");
        for g in &self.gates {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                md_escape(&g.name),
                if g.pass { "PASS" } else { "**FAIL**" },
                fmt_num(g.measured),
                fmt_num(g.limit),
                md_escape(&g.detail)
            );
        }
        s
    }
}

/// Numbers as people read them: 4 significant digits, scientific when tiny or huge.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.3e}")
    } else {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
    }
}

pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(name: &str, pass: bool) -> GateResult {
        GateResult { name: name.into(), measured: 0.5, limit: 0.1, pass, detail: "a<b & \"c\"".into() }
    }

    #[test]
    fn empty_gate_list_is_not_a_pass() {
        assert!(!GateReport::new(vec![]).pass);
        assert!(GateReport::new(vec![gate("a", true)]).pass);
        assert!(!GateReport::new(vec![gate("a", true), gate("b", false)]).pass);
    }

    #[test]
    fn junit_escapes_and_counts() {
        let x = GateReport::new(vec![gate("a", true), gate("b", false)]).junit_xml("exp");
        assert!(x.contains("tests=\"2\" failures=\"1\""));
        assert_eq!(x.matches("<testcase ").count(), 2);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert!(x.contains("a&lt;b &amp; &quot;c&quot;"));
        assert!(!x.contains("a<b"));
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(fmt_num(0.0123456), "0.01235");
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(1.5e-7), "1.500e-7");
        assert_eq!(fmt_num(f64::NAN), "NaN");
    }
}
