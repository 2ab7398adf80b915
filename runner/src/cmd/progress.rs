//! Progress: one indicatif bar per backend on a terminal, plain lines otherwise (CI logs). Each
//! iteration shows what Darknet prints — iteration of total, loss and its running average
//! (Darknet's `avg_loss = 0.9·avg + 0.1·loss`), learning rate, images/s — and the time left.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reports::IterationRecord;

pub struct Progress {
    bars: Option<(MultiProgress, Vec<(String, ProgressBar)>)>,
    /// Per backend: Darknet's running average loss.
    avg: Vec<(String, f64)>,
    /// Iterations before this run (resumed) and the last one it trains.
    start: u64,
    total: u64,
    started: Instant,
}

impl Progress {
    /// `start`: iterations already done (resuming); `total`: the iteration training ends at.
    pub fn new(backends: &[String], start: u64, total: u64) -> Progress {
        let avg = backends.iter().map(|b| (b.clone(), f64::NAN)).collect();
        let mut p = Progress { bars: None, avg, start, total, started: Instant::now() };
        if !std::io::stdout().is_terminal() {
            return p;
        }
        let mp = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bars = backends
            .iter()
            .map(|b| {
                let pb = mp.add(ProgressBar::new(total));
                pb.set_style(style.clone());
                pb.set_prefix(b.clone());
                pb.set_position(start);
                (b.clone(), pb)
            })
            .collect();
        p.bars = Some((mp, bars));
        p
    }

    /// Time left, from the run's pace so far (all backends: they take turns).
    fn eta(&self, iteration: u64) -> String {
        let done = iteration.saturating_sub(self.start);
        if done == 0 {
            return "?".into();
        }
        let per = self.started.elapsed().as_secs_f64() / done as f64;
        hms(Duration::from_secs_f64(per * self.total.saturating_sub(iteration) as f64))
    }

    pub fn step(&mut self, r: &IterationRecord) {
        let avg = match self.avg.iter_mut().find(|(b, _)| *b == r.backend) {
            Some((_, a)) => {
                *a = if a.is_nan() { r.loss } else { 0.9 * *a + 0.1 * r.loss };
                *a
            }
            None => r.loss,
        };
        let msg = format!(
            "epoch {} loss {:.4} avg {avg:.4} lr {:.6} {:.1} img/s ETA {}",
            r.epoch,
            r.loss,
            r.lr,
            r.images_per_s,
            self.eta(r.iteration)
        );
        match &self.bars {
            Some((_, bars)) => {
                if let Some((_, pb)) = bars.iter().find(|(n, _)| *n == r.backend) {
                    pb.set_message(msg);
                    pb.set_position(r.iteration);
                }
            }
            None => println!("{:>8} iter {}/{} {msg}", r.backend, r.iteration, self.total),
        }
    }

    pub fn line(&self, text: &str) {
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(text);
            }
            None => println!("{text}"),
        }
    }

    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for (_, pb) in bars {
                pb.finish();
            }
        }
    }
}

/// "1h 02m 03s", "4m 05s", "6s".
fn hms(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec:02}s"),
        (h, m, sec) => format!("{h}h {m:02}m {sec:02}s"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_like_a_clock() {
        use std::time::Duration;
        assert_eq!(super::hms(Duration::from_secs(6)), "6s");
        assert_eq!(super::hms(Duration::from_secs(245)), "4m 05s");
        assert_eq!(super::hms(Duration::from_secs(3723)), "1h 02m 03s");
    }
}
