//! Records of runs that did not end well: the tables appended during a run read back (also
//! when a kill cut the last line), a resumed run is shown with the runs it continued, and a run
//! that failed, was interrupted or is shorter is a regression in a comparison.

use reports::demo::synthetic_run;
use reports::{
    Journal, OutputFormats, ResumedFrom, RunData, RunStatus, compare, read_run, read_run_with_history,
    write_run, write_summary,
};
use std::io::Write;
use std::path::{Path, PathBuf};

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interrupted-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn appended_tables_read_back_even_cut_by_a_kill() {
    let mut run = synthetic_run(12);
    // Values a diverging run writes must survive the text round trip.
    run.iterations[3].loss = f64::NAN;
    run.iterations[4].obj_loss = f64::INFINITY;
    let dir = out_dir("journal");
    let mut summary = run.summary.clone();
    summary.status = RunStatus::Running;
    write_summary(&dir, &summary).unwrap();
    let mut j = Journal::create(&dir).unwrap();
    for r in &run.iterations {
        j.iteration(r, 2).unwrap();
    }
    for e in &run.epochs {
        j.epoch(e).unwrap();
    }
    j.flush().unwrap();
    drop(j);
    // A kill in the middle of a line: the half line is not a record.
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("tables/iterations.csv")).unwrap();
    f.write_all(b"cpu,13,0,0.5,0.1").unwrap();
    drop(f);
    let back = read_run(&dir).expect("a killed run's folder reads back");
    assert_eq!(back.summary.status, RunStatus::Running);
    assert_eq!(back.iterations.len(), run.iterations.len());
    for (a, b) in back.iterations.iter().zip(&run.iterations) {
        assert_eq!((a.backend.as_str(), a.iteration, a.rss_bytes), (b.backend.as_str(), b.iteration, b.rss_bytes));
        assert!(a.loss.to_bits() == b.loss.to_bits() || (a.loss.is_nan() && b.loss.is_nan()), "{} vs {}", a.loss, b.loss);
        assert_eq!(a.obj_loss, b.obj_loss);
    }
    assert_eq!(back.epochs, run.epochs);
    assert!(back.memory.is_empty(), "no memory table yet: an empty timeline, not an error");
}

/// Run A trained iterations 1..=12; B resumed from A's checkpoint at 6 and trained 7..=9.
#[test]
fn resumed_run_is_shown_with_the_run_it_continued() {
    let root = out_dir("history");
    let a = synthetic_run(12);
    write_run(&root.join("a"), &a, OutputFormats::all()).unwrap();
    let mut b = synthetic_run(9);
    b.iterations.retain(|r| r.iteration > 6);
    let first_epoch_b = b.iterations.iter().map(|r| r.epoch).min().unwrap();
    b.summary.resumed_from = Some(ResumedFrom { run_dir: "../a".into(), iteration: 6 });
    b.refresh();
    write_run(&root.join("b"), &b, OutputFormats::all()).unwrap();
    let (whole, warnings) = read_run_with_history(&root.join("b")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let its: Vec<u64> = whole.iterations.iter().filter(|r| r.backend == "cpu").map(|r| r.iteration).collect();
    assert_eq!(its, (1..=9).collect::<Vec<_>>(), "A's 1..=6 (not its 7..=12, which B redid), then B's");
    assert!(whole.epochs.iter().all(|e| e.epoch >= first_epoch_b || a.epochs.contains(e)));
    // B's own folder keeps only its own rows.
    assert_eq!(read_run(&root.join("b")).unwrap().iterations.len(), b.iterations.len());
    // A moved away: B still reads, with a warning.
    std::fs::rename(root.join("a"), root.join("gone")).unwrap();
    let (alone, warnings) = read_run_with_history(&root.join("b")).unwrap();
    assert_eq!(alone.iterations.len(), b.iterations.len());
    assert_eq!(warnings.len(), 1);
}

fn with_status(mut run: RunData, status: RunStatus) -> RunData {
    run.summary.status = status;
    run.summary.stopped_at_iteration = Some(5);
    if status == RunStatus::Failed {
        run.summary.extra.insert("error".into(), "iteration 5: the loss became NaN".into());
    }
    run
}

#[test]
fn failed_interrupted_killed_or_short_runs_are_regressions() {
    let a = synthetic_run(20);
    assert!(!compare(&a, &a, 0.05).has_regression(), "a run against itself");
    for (status, says) in [(RunStatus::Failed, "run B failed at iteration 5: iteration 5"), (RunStatus::Interrupted, "interrupted at iteration 5"), (RunStatus::Running, "did not finish")] {
        let c = compare(&a, &with_status(a.clone(), status), 0.05);
        assert!(c.has_regression(), "{status:?} is not a regression");
        assert!(c.markdown().contains(says), "{}", c.markdown());
    }
    let mut short = a.clone();
    short.iterations.retain(|r| r.iteration <= 2);
    short.refresh();
    let c = compare(&a, &short, 0.05);
    assert!(c.run_regressions.iter().any(|r| r.contains("ran 2 iterations in B but 20 in A")), "{:?}", c.run_regressions);
    // The other way round (B longer) is no regression by itself.
    assert!(compare(&short, &a, 1.0).run_regressions.is_empty());
}

#[test]
fn noise_margin_is_checked() {
    for bad in [f64::NAN, -0.01, 1.5, f64::INFINITY] {
        assert!(reports::compare::check_noise_margin(bad).is_err(), "{bad}");
    }
    for ok in [0.0, 0.05, 1.0] {
        assert!(reports::compare::check_noise_margin(ok).is_ok(), "{ok}");
    }
}
