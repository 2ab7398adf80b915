//! Progress: one indicatif bar per backend on a terminal, plain lines otherwise.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reports::IterationRecord;

pub struct Progress {
    bars: Option<(MultiProgress, Vec<(String, ProgressBar)>)>,
}

impl Progress {
    pub fn new(backends: &[String], total: u64) -> Progress {
        if !std::io::stdout().is_terminal() {
            return Progress { bars: None };
        }
        let mp = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bars = backends
            .iter()
            .map(|b| {
                let pb = mp.add(ProgressBar::new(total));
                pb.set_style(style.clone());
                pb.set_prefix(b.clone());
                (b.clone(), pb)
            })
            .collect();
        Progress { bars: Some((mp, bars)) }
    }

    pub fn step(&mut self, backend: &str, r: &IterationRecord) {
        let msg = format!("epoch {} iter {} loss {:.4} {:.1} img/s", r.epoch, r.iteration, r.loss, r.images_per_s);
        match &self.bars {
            Some((_, bars)) => {
                if let Some((_, pb)) = bars.iter().find(|(n, _)| n == backend) {
                    pb.set_message(msg);
                    pb.inc(1);
                }
            }
            None => println!("{backend:>8} {msg}"),
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
