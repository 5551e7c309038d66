//! One status line with perfdata, for Icinga, Nagios, Zabbix and anything that runs monitoring
//! plugins: `ORIGIN-AGENT CRITICAL - summary | total=… 5xx=… …`. The exit code carries the state.

use super::Report;
use crate::check::Status;

pub fn render(report: &Report) -> String {
    let failing = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    let warning = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Warn)
        .count();
    let cause = report
        .verdict
        .cause
        .map_or(String::new(), |c| format!("[{c}] "));
    let summary = report.verdict.summary.replace('|', "/");
    let mut perf = format!(
        "responses={} status_5xx={} status_502={} status_504={} unexplained={} checks_fail={failing} checks_warn={warning}",
        report.responses.total,
        report.responses.status_5xx,
        report.responses.status_502,
        report.responses.status_504,
        report.unexplained,
    );
    for check in &report.checks {
        for metric in &check.metrics {
            let name: String = format!("{}.{}", check.id, metric.name)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let unit = metric.unit.as_deref().unwrap_or("");
            let fmt = |v: Option<f64>| v.map_or(String::new(), number);
            perf.push_str(&format!(
                " '{name}'={}{unit};{};{}",
                number(metric.value),
                fmt(metric.warn),
                fmt(metric.crit)
            ));
        }
    }
    format!(
        "ORIGIN-AGENT {} - {cause}{summary} | {perf}\n",
        report.verdict.status.label()
    )
}

/// A perfdata number: integers as such, others with at most three decimals.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
