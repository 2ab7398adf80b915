//! Gate outputs: gate.json, JUnit XML (one testcase per gate) and a Markdown summary.

use crate::SCHEMA_VERSION;
use crate::records::{GateResult, RunSummary};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// The outcome of a run's gates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "pass")]
    Pass,
    #[serde(rename = "fail")]
    Fail,
    /// The experiment has no `[thresholds]` (and the run completed): nothing was checked, so there
    /// is neither a pass nor a failure to report.
    #[serde(rename = "no gates defined")]
    NoGates,
}

impl Verdict {
    /// How people read it: "PASS", "FAIL", "NO GATES".
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NoGates => "NO GATES",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub schema_version: u32,
    /// `pass`, `fail` or `no gates defined`.
    pub verdict: Verdict,
    /// True when every gate passed, false when one failed, null when there are no gates.
    pub pass: Option<bool>,
    pub gates: Vec<GateResult>,
}

impl GateReport {
    pub fn new(gates: Vec<GateResult>) -> Self {
        // No gate at all is no verdict: neither a pass (nothing was checked) nor a failure.
        let verdict = if gates.is_empty() {
            Verdict::NoGates
        } else if gates.iter().all(|g| g.pass) {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let pass = match verdict {
            Verdict::NoGates => None,
            v => Some(v == Verdict::Pass),
        };
        GateReport { schema_version: SCHEMA_VERSION, verdict, pass, gates }
    }

    pub fn failures(&self) -> usize {
        self.gates.iter().filter(|g| !g.pass).count()
    }

    /// Gates that held without proving anything (see [`GateResult::informative`]).
    pub fn not_informative(&self) -> usize {
        self.gates.iter().filter(|g| g.pass && !g.informative).count()
    }

    /// "2 of 3 gates passed (1 not informative)." or the no-gates sentence.
    pub fn counts(&self) -> String {
        if self.verdict == Verdict::NoGates {
            return "No gates defined: the experiment has no [thresholds].".to_string();
        }
        let weak = match self.not_informative() {
            0 => String::new(),
            n => format!(" ({n} not informative)"),
        };
        format!("{} of {} gates passed{weak}.", self.gates.len() - self.failures(), self.gates.len())
    }

    /// JUnit XML as CI systems read it: one `<testcase>` per gate, `<failure>` on a failed one.
    pub fn junit_xml(&self, suite: &str) -> String {
        let suite = if suite.is_empty() { "parity" } else { suite };
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        // No gates: one skipped test case says so, so CI shows "no gates defined", not "0 tests".
        let skipped = usize::from(self.verdict == Verdict::NoGates) + self.not_informative();
        let _ = writeln!(
            s,
            "<testsuites name=\"{0}\" tests=\"{1}\" failures=\"{2}\" skipped=\"{3}\">\n  <testsuite name=\"{0}\" tests=\"{1}\" failures=\"{2}\" errors=\"0\" skipped=\"{3}\">",
            xml_escape(suite),
            self.gates.len() + skipped,
            self.failures(),
            skipped
        );
        if self.verdict == Verdict::NoGates {
            let _ = writeln!(
                s,
                "    <testcase classname=\"{}.gates\" name=\"no gates defined\"><skipped message=\"the experiment has no [thresholds]\"/></testcase>",
                xml_escape(suite)
            );
        }
        for g in &self.gates {
            let _ = write!(
                s,
                "    <testcase classname=\"{}.gates\" name=\"{}\">",
                xml_escape(suite),
                xml_escape(&g.name)
            );
            let line = format!("measured {} limit {}: {}", fmt_num(g.measured), fmt_num(g.limit), g.detail);
            if g.pass && !g.informative {
                // Held, but proves nothing: CI shows it as skipped rather than as a pass.
                let _ = writeln!(s, "<skipped message=\"not informative\"/><system-out>{}</system-out></testcase>", xml_escape(&line));
            } else if g.pass {
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
        let _ = writeln!(s, "# {}: {}\n", self.verdict.label(), md_escape(&summary.experiment_name));
        let _ = writeln!(s, "{} Commit `{}`, experiment hash `{}`.\n", self.counts(), summary.git_commit, summary.experiment_hash);
        s.push_str("| gate | result | measured | limit | detail |\n|---|---|---:|---:|---|\n");
        for g in &self.gates {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                md_escape(&g.name),
                g.result(),
                fmt_num(g.measured),
                fmt_num(g.limit),
                md_escape(&g.detail)
            );
        }
        s
    }
}

impl GateResult {
    /// "PASS", "PASS (not informative)" or "**FAIL**" (Markdown).
    pub fn result(&self) -> &'static str {
        match (self.pass, self.informative) {
            (true, true) => "PASS",
            (true, false) => "PASS (not informative)",
            (false, _) => "**FAIL**",
        }
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
        GateResult::new(name, 0.5, 0.1, pass, "a<b & \"c\"".into())
    }

    #[test]
    fn empty_gate_list_is_no_verdict() {
        let none = GateReport::new(vec![]);
        assert_eq!((none.verdict, none.pass), (Verdict::NoGates, None));
        assert_eq!(GateReport::new(vec![gate("a", true)]).pass, Some(true));
        let fail = GateReport::new(vec![gate("a", true), gate("b", false)]);
        assert_eq!((fail.verdict, fail.pass), (Verdict::Fail, Some(false)));
    }

    /// gate.json, gate.md and junit.xml say the same thing when there is no gate.
    #[test]
    fn no_gates_is_said_the_same_way_everywhere() {
        let r = GateReport::new(vec![]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"verdict\":\"no gates defined\"") && json.contains("\"pass\":null"), "{json}");
        let md = r.markdown(&RunSummary::default());
        assert!(md.starts_with("# NO GATES") && md.contains("No gates defined") && !md.contains("FAIL"), "{md}");
        let x = r.junit_xml("exp");
        assert!(x.contains("failures=\"0\" skipped=\"1\"") && x.contains("name=\"no gates defined\"><skipped"), "{x}");
        let back: GateReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
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
