//! Progress of long runs on stderr: indicatif's bar when stderr is a terminal, plain lines
//! otherwise (indicatif draws nothing on a pipe or a file, so a `--json` run redirected to a log
//! would otherwise be silent for minutes). Nothing here writes to stdout.
//!
//! A plain-line [`Progress`] prints one line each time the count crosses another tenth of the
//! total, and one when it finishes:
//!
//! ```text
//! [   12.3s] [2/5] K 4x256 / V 4x256 (seed 0x1): 1024/2048 tokens (50%), eta 12s
//! ```
//!
//! The time in brackets is measured from the start of the process (see [`elapsed`]).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// indicatif's bar (stderr is a terminal).
    Bar,
    /// Plain lines on stderr (stderr is not a terminal).
    Lines,
    /// Nothing.
    Hidden,
}

impl Mode {
    /// [`Mode::Bar`] if stderr is a terminal, else [`Mode::Lines`].
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Bar
        } else {
            Self::Lines
        }
    }
}

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Seconds since the first call of any function of this module (call [`elapsed`] early in
/// `main` to make it the process's run time).
pub fn elapsed() -> f64 {
    process_start().elapsed().as_secs_f64()
}

/// Prints `msg` as a plain progress line on stderr when stderr is not a terminal (on a terminal,
/// nothing: the bars show progress there).
pub fn note(msg: &str) {
    if Mode::detect() == Mode::Lines {
        eprintln!("[{:>8.1}s] {msg}", elapsed());
    }
}

/// Tenths of the total reported by a plain-line [`Progress`].
const STEPS: u64 = 10;

struct Lines {
    out: Box<dyn Write + Send>,
    len: u64,
    pos: u64,
    /// Tenths already reported.
    reported: u64,
    msg: String,
    unit: String,
    start: Instant,
    finished: bool,
}

impl Lines {
    fn line(&mut self) {
        let pct = (self.pos.min(self.len) * 100)
            .checked_div(self.len)
            .unwrap_or(100);
        let secs = self.start.elapsed().as_secs_f64();
        let tail = if self.finished {
            format!("done in {secs:.1}s")
        } else if self.pos > 0 {
            let left = self.len.saturating_sub(self.pos) as f64;
            format!("eta {:.0}s", secs / self.pos as f64 * left)
        } else {
            String::new()
        };
        let msg = if self.msg.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.msg)
        };
        // A failed write to stderr is not worth failing the run for.
        let _ = writeln!(
            self.out,
            "[{:>8.1}s] {msg}{}/{} {} ({pct}%), {tail}",
            elapsed(),
            self.pos,
            self.len,
            self.unit
        );
    }
}

enum Inner {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
    Hidden,
}

/// A progress counter from 0 to `len` (see the module docs for how it is shown).
pub struct Progress {
    inner: Inner,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.inner {
            Inner::Bar(_) => Mode::Bar,
            Inner::Lines(_) => Mode::Lines,
            Inner::Hidden => Mode::Hidden,
        };
        f.debug_struct("Progress").field("mode", &mode).finish()
    }
}

impl Progress {
    /// A counter of `len` `unit`s shown as [`Mode::detect`] says.
    pub fn new(len: u64, unit: &str) -> Self {
        Self::with_mode(Mode::detect(), len, unit)
    }

    /// A counter shown in the given mode (plain lines go to stderr).
    pub fn with_mode(mode: Mode, len: u64, unit: &str) -> Self {
        match mode {
            Mode::Bar => {
                let template = format!(
                    "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{msg}}, eta {{eta}})"
                );
                // The template is fixed apart from `unit`; fall back to the default style
                // rather than fail a run over how its bar looks.
                let style = ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                Self {
                    inner: Inner::Bar(ProgressBar::new(len).with_style(style)),
                }
            }
            Mode::Lines => Self::to_writer(len, unit, std::io::stderr()),
            Mode::Hidden => Self {
                inner: Inner::Hidden,
            },
        }
    }

    /// A plain-line counter writing to `out` (tests; [`Mode::Lines`] writes to stderr).
    pub fn to_writer(len: u64, unit: &str, out: impl Write + Send + 'static) -> Self {
        Self {
            inner: Inner::Lines(Mutex::new(Lines {
                out: Box::new(out),
                len,
                pos: 0,
                reported: 0,
                msg: String::new(),
                unit: unit.to_string(),
                start: Instant::now(),
                finished: false,
            })),
        }
    }

    /// Sets the text shown with the count (which setting, which code).
    pub fn set_message(&self, msg: impl Into<String>) {
        match &self.inner {
            Inner::Bar(pb) => pb.set_message(msg.into()),
            Inner::Lines(l) => {
                if let Ok(mut l) = l.lock() {
                    l.msg = msg.into();
                }
            }
            Inner::Hidden => {}
        }
    }

    /// Advances the count by `n`.
    pub fn inc(&self, n: u64) {
        match &self.inner {
            Inner::Bar(pb) => pb.inc(n),
            Inner::Lines(l) => {
                let Ok(mut l) = l.lock() else { return };
                l.pos += n;
                // Reach 100% only through `finish`, so that a run prints its last line once.
                let tenths = (l.pos * STEPS).checked_div(l.len).unwrap_or(0);
                if tenths > l.reported && l.pos < l.len {
                    l.reported = tenths;
                    l.line();
                }
            }
            Inner::Hidden => {}
        }
    }

    /// Ends the counter: clears the bar, or prints the final line (count and total time).
    pub fn finish(&self) {
        match &self.inner {
            Inner::Bar(pb) => pb.finish_and_clear(),
            Inner::Lines(l) => {
                let Ok(mut l) = l.lock() else { return };
                if !l.finished {
                    l.finished = true;
                    l.line();
                }
            }
            Inner::Hidden => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    #[test]
    fn one_line_per_tenth_and_one_at_the_end() {
        let buf = Buf::default();
        let p = Progress::to_writer(100, "tokens", buf.clone());
        p.set_message("setting A");
        for _ in 0..100 {
            p.inc(1);
        }
        p.finish();
        p.finish();
        let lines = buf.lines();
        assert_eq!(lines.len(), 10, "{lines:#?}");
        assert!(
            lines[0].contains("s] setting A: 10/100 tokens (10%), eta "),
            "{}",
            lines[0]
        );
        assert!(lines[8].contains("90/100 tokens (90%)"), "{}", lines[8]);
        assert!(
            lines[9].contains("setting A: 100/100 tokens (100%), done in "),
            "{}",
            lines[9]
        );
        assert!(lines.iter().all(|l| l.starts_with('[')));
    }

    #[test]
    fn big_steps_print_once_and_empty_totals_do_not_divide_by_zero() {
        let buf = Buf::default();
        let p = Progress::to_writer(16, "layers", buf.clone());
        p.inc(7); // 0.4375: four tenths crossed at once, one line
        p.inc(9); // reaches the total: left to `finish`
        p.finish();
        let lines = buf.lines();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].contains("7/16 layers (43%)"), "{}", lines[0]);
        assert!(
            lines[1].contains("16/16 layers (100%), done in "),
            "{}",
            lines[1]
        );

        let buf = Buf::default();
        let p = Progress::to_writer(0, "x", buf.clone());
        p.inc(1);
        p.finish();
        assert_eq!(buf.lines().len(), 1);
    }

    #[test]
    fn hidden_prints_nothing() {
        let p = Progress::with_mode(Mode::Hidden, 10, "x");
        p.inc(10);
        p.finish();
    }
}
