//! The monitoring files in deploy/ name only metrics Herald exports: every PromQL expression of the
//! Grafana dashboard (`deploy/grafana/herald.json`), of the alert rules (`deploy/prometheus/alerts.yml`)
//! and every input series of their unit tests (`alerts.test.yml`) is scanned for metric names, which must
//! be in the metric catalog (docs/operations.md, "Metrics"). A renamed metric then fails here instead of
//! leaving an empty panel or an alert that can never fire. Every alert's `runbook_url`, and every link
//! inside the runbook (docs/operations.md), must lead to one of its sections.

use std::collections::BTreeSet;

/// How a metric is exposed: a histogram also has `_bucket`, `_sum` and `_count` series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Histogram,
}

/// The metric catalog of issue 10 (the `herald_` and standard `process_` metrics).
pub const CATALOG: &[(&str, Kind)] = &[
    ("herald_events_accepted_total", Kind::Plain),
    ("herald_events_published_total", Kind::Plain),
    ("herald_outbox_unpublished_events", Kind::Plain),
    ("herald_outbox_oldest_unpublished_age_seconds", Kind::Plain),
    ("herald_deliveries_created_total", Kind::Plain),
    ("herald_deliveries_direct_total", Kind::Plain),
    ("herald_attempts_total", Kind::Plain),
    ("herald_attempt_duration_seconds", Kind::Histogram),
    ("herald_deliveries_ended_total", Kind::Plain),
    ("herald_end_to_end_latency_seconds", Kind::Histogram),
    ("herald_webhooks_disabled_total", Kind::Plain),
    ("herald_retries_scheduled_total", Kind::Plain),
    ("herald_retries_due_total", Kind::Plain),
    ("herald_endpoint_deferrals_total", Kind::Plain),
    ("herald_deliveries_in_flight", Kind::Plain),
    ("herald_queue_depth_messages", Kind::Plain),
    ("herald_group_commit_batch_size", Kind::Histogram),
    ("herald_db_pool_connections", Kind::Plain),
    ("herald_db_pool_max_connections", Kind::Plain),
    ("herald_broker_connected", Kind::Plain),
    ("herald_http_requests_total", Kind::Plain),
    ("herald_http_request_duration_seconds", Kind::Histogram),
    ("herald_ready", Kind::Plain),
    ("herald_stage_failures_total", Kind::Plain),
    ("herald_retention_removed_total", Kind::Plain),
    ("herald_retention_pass_duration_seconds", Kind::Histogram),
    ("herald_retention_last_success_timestamp_seconds", Kind::Plain),
    ("process_cpu_seconds_total", Kind::Plain),
    ("process_resident_memory_bytes", Kind::Plain),
    ("process_start_time_seconds", Kind::Plain),
];

/// Whether `name` is a series of a catalog metric (a histogram's `_bucket`, `_sum` and `_count` too).
pub fn in_catalog(name: &str) -> bool {
    CATALOG.iter().any(|&(metric, kind)| {
        name == metric
            || (kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(metric)))
    })
}

/// The metric names (identifiers starting with `herald_` or `process_`) in a PromQL expression. Quoted
/// label values are skipped, so `{process="api"}` names no metric.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut quote = None;
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if let Some(open) = quote {
            if c == open {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("herald_") || word.starts_with("process_") {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
        if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        }
    }
    names
}

/// Every `"expr"` string anywhere in a Grafana dashboard.
fn dashboard_exprs(value: &serde_json::Value, exprs: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value {
                    serde_json::Value::String(expr) if key == "expr" => exprs.push(expr.clone()),
                    _ => dashboard_exprs(value, exprs),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| dashboard_exprs(item, exprs)),
        _ => {}
    }
}

/// The values of `key:` in a YAML file, including `key: |` blocks (the more indented lines after it).
/// A line scan is enough for these files and keeps a YAML parser out of the dependencies.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    let mut values = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(rest) = trimmed.strip_prefix(&prefix) else { continue };
        let rest = rest.split(" # ").next().unwrap_or_default().trim();
        if !rest.starts_with('|') && !rest.starts_with('>') {
            let unquoted = ['\'', '"'].iter().find_map(|&q| rest.strip_prefix(q)?.strip_suffix(q));
            values.push(unquoted.unwrap_or(rest).to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while let Some(next) =
            lines.next_if(|next| next.trim().is_empty() || next.len() - next.trim_start().len() > indent)
        {
            block.push_str(next.trim());
            block.push('\n');
        }
        values.push(block);
    }
    values
}

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("reading {full}: {error}"))
}

/// The metric names in `exprs` that are not in the catalog, each with the file it came from.
fn unknown(file: &str, exprs: &[String]) -> BTreeSet<String> {
    exprs
        .iter()
        .flat_map(|expr| metric_names(expr))
        .filter(|name| !in_catalog(name))
        .map(|name| format!("{file}: {name}"))
        .collect()
}

#[test]
fn the_scan_finds_metric_names_and_only_them() {
    let expr = r#"histogram_quantile(0.99, sum by (le, process) (rate(herald_attempt_duration_seconds_bucket{process="herald_x", job=~"process_y"}[5m]))) / process_cpu_seconds_total"#;
    assert_eq!(metric_names(expr), ["herald_attempt_duration_seconds_bucket", "process_cpu_seconds_total"]);
    assert!(in_catalog("herald_attempt_duration_seconds_count"));
    assert!(!in_catalog("herald_attempts_total_count"), "only histograms have _count series");
    assert!(!in_catalog("herald_no_such_metric"));
    let yaml = "  - alert: A\n    expr: up == 0 # tune\n  - alert: B\n    expr: |\n      sum(x)\n      / y\n    for: 5m\n";
    assert_eq!(yaml_values(yaml, "expr"), ["up == 0", "sum(x)\n/ y\n"]);
    assert_eq!(
        yaml_values("  - series: 'herald_ready{job=\"a\"}'\n", "series"),
        [r#"herald_ready{job="a"}"#]
    );
}

#[test]
fn the_dashboard_uses_only_catalog_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/herald.json")).expect("valid JSON");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS", "a datasource input to import with");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "the dashboard has its queries ({} found)", exprs.len());
    assert_eq!(unknown("herald.json", &exprs), BTreeSet::new(), "metrics not in the catalog");
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: BTreeSet<_> = panels.iter().map(|panel| panel["id"].as_u64().expect("panel id")).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
}

#[test]
fn the_alert_rules_and_their_tests_use_only_catalog_metrics() {
    let rules = yaml_values(&read("deploy/prometheus/alerts.yml"), "expr");
    assert!(rules.len() >= 8, "the rules have their expressions ({} found)", rules.len());
    assert_eq!(unknown("alerts.yml", &rules), BTreeSet::new(), "metrics not in the catalog");
    let series = yaml_values(&read("deploy/prometheus/alerts.test.yml"), "series");
    assert!(!series.is_empty(), "the rule tests have input series");
    assert_eq!(unknown("alerts.test.yml", &series), BTreeSet::new(), "metrics not in the catalog");
}

/// The anchor GitHub gives a Markdown heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_runbook_link_and_runbook_anchor_exists() {
    let runbook = read("docs/operations.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix('#').map(|rest| anchor(rest.trim_start_matches('#'))))
        .collect();
    let alerts = read("deploy/prometheus/alerts.yml");
    let urls = yaml_values(&alerts, "runbook_url");
    assert_eq!(urls.len(), yaml_values(&alerts, "alert").len(), "every alert has a runbook_url");
    let links = urls.iter().map(|url| url.split_once("docs/operations.md#").expect("a runbook section").1);
    let internal = runbook.split("](#").skip(1).map(|rest| rest.split(')').next().unwrap_or_default());
    let missing: BTreeSet<&str> = links.chain(internal).filter(|target| !anchors.contains(*target)).collect();
    assert_eq!(missing, BTreeSet::new(), "links to runbook sections that do not exist");
}
