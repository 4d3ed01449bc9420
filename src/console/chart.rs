//! Charts drawn on the server as SVG markup: stacked bars of deliveries per bucket (succeeded,
//! retrying, dead). Colours come from the stylesheet by class (no inline style, which the CSP
//! forbids); the chart carries a text summary for screen readers. Every number written is formatted
//! by Rust, so the markup holds no text from elsewhere.

use std::fmt::Write;

use super::data::Bucket;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;

/// A stacked bar chart of `buckets`, labelled `label` (a fixed text of the page).
pub(crate) fn stacked_bars(buckets: &[Bucket], label: &str) -> String {
    let highest = buckets.iter().map(Bucket::total).max().unwrap_or(0).max(1) as f64;
    let slot = WIDTH / buckets.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let total: u64 = buckets.iter().map(Bucket::total).sum();
    let dead: u64 = buckets.iter().map(|b| b.dead).sum();
    let retrying: u64 = buckets.iter().map(|b| b.retrying).sum();
    let mut svg = String::with_capacity(buckets.len() * 200);
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {h}" preserveAspectRatio="none" role="img" aria-label="{label}: {total} deliveries, {retrying} retrying, {dead} dead" xmlns="http://www.w3.org/2000/svg">"#,
        h = HEIGHT + 2.0,
    );
    let _ = write!(svg, r#"<line class="axis" x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/>"#);
    for (i, bucket) in buckets.iter().enumerate() {
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let mut top = HEIGHT;
        for (count, class) in [(bucket.succeeded, "ok"), (bucket.retrying, "retry"), (bucket.dead, "dead")] {
            if count == 0 {
                continue;
            }
            let height = count as f64 / highest * (HEIGHT - 4.0);
            top -= height;
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{x:.1}" y="{top:.1}" width="{bar:.1}" height="{height:.1}"><title>{count} {class}</title></rect>"#,
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_stacked_by_status_and_scaled_to_the_highest() {
        let buckets = [
            Bucket { start: 0, succeeded: 2, retrying: 1, dead: 1 },
            Bucket { start: 60, succeeded: 0, retrying: 0, dead: 0 },
        ];
        let svg = stacked_bars(&buckets, "last hour");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(svg.contains(r#"class="dead""#) && svg.contains("4 deliveries, 1 retrying, 1 dead"), "{svg}");
        assert!(!svg.contains("style"), "no inline style: the CSP forbids it");
    }
}
