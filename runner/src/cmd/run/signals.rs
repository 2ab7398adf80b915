//! SIGINT (Ctrl-C) and SIGTERM stop a run at the next iteration boundary, so it can write its
//! checkpoint, tables and report. A second signal of the same kind ends the process at once (the
//! default action), for a run that does not reach a boundary soon enough.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

/// A signal that asked the run to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Interrupt,
    Terminate,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        }
    }

    /// The shell's convention: 128 + the signal number.
    pub fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
        }
    }
}

/// Flags set by the handlers; read between iterations.
pub struct Signals {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        let (int, term) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        for (sig, flag) in [(SIGINT, &int), (SIGTERM, &term)] {
            // The conditional default first: on the second signal the flag is already set.
            signal_hook::flag::register_conditional_default(sig, Arc::clone(flag)).context("installing a signal handler")?;
            signal_hook::flag::register(sig, Arc::clone(flag)).context("installing a signal handler")?;
        }
        Ok(Signals { int, term })
    }

    /// The first stop request received, if any.
    pub fn received(&self) -> Option<Stop> {
        if self.int.load(Ordering::Relaxed) {
            Some(Stop::Interrupt)
        } else if self.term.load(Ordering::Relaxed) {
            Some(Stop::Terminate)
        } else {
            None
        }
    }
}
