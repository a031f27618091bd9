//! The progress bars of long CLI work, on stderr (indicatif hides them when stderr is not a
//! terminal, so logs and pipes stay clean).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

fn style(template: &str, fallback: ProgressStyle) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or(fallback)
}

/// Bytes moved to or from a registry (the length is set once known).
pub(super) fn bytes(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(style(
        "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg} [{elapsed} < {eta}]",
        ProgressStyle::default_bar(),
    ));
    bar.set_prefix(what.to_string());
    bar
}

/// Steps of a phase (`{prefix}` names it): meta-steps, students trained.
pub(super) fn steps(what: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(style(
        "{prefix} {bar:30} {pos}/{len} {msg} [{elapsed}]",
        ProgressStyle::default_bar(),
    ));
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
