//! The HTML report (being written).

use super::report::Report;

/// The report as one self-contained HTML page.
pub fn render(report: &Report) -> String {
    let _ = report;
    String::new()
}
