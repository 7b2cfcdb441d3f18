//! The fleet page and the device page: server-rendered HTML, no script.
//! Pure: rows in, text out.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::status::{Row, layers_text, presence};
use crate::view::{Device, Filter, Heard, age_text};

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
th,td{padding:.3em .6em;border-bottom:1px solid #ccc;text-align:left;vertical-align:top}\
tr.ok td:first-child{border-left:.4em solid #2e7d32}tr.problem td:first-child{border-left:.4em solid #f9a825}\
tr.offline td:first-child{border-left:.4em solid #c62828}tr.offline{color:#777}\
.problems{color:#b71c1c}nav a{margin-right:1em}pre{background:#f4f4f4;padding:1em;overflow:auto}";

/// Text made safe for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query-string component encoded.
fn escape_url(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Sorts rows by `key`: `device`, `presence` (offline first), `backlog`
/// (largest first), `problems` (most first), `age` (oldest first).
pub fn sort(rows: &mut [Row], key: &str) {
    match key {
        "presence" => rows.sort_by_key(|r| (r.online, r.device.clone())),
        "backlog" => {
            rows.sort_by_key(|r| (std::cmp::Reverse(r.backlog.unwrap_or(0)), r.device.clone()))
        }
        "problems" => rows.sort_by_key(|r| (std::cmp::Reverse(r.problems.len()), r.device.clone())),
        "age" => rows.sort_by(|a, b| {
            let age = |r: &Row| r.oldest_unsent_age_s.unwrap_or(0.0);
            age(b)
                .total_cmp(&age(a))
                .then_with(|| a.device.cmp(&b.device))
        }),
        _ => rows.sort_by(|a, b| a.device.cmp(&b.device)),
    }
}

fn row_class(r: &Row) -> &'static str {
    match (r.online, r.problems.is_empty()) {
        (false, _) => "offline",
        (true, true) => "ok",
        (true, false) => "problem",
    }
}

/// The query string that keeps `filter` and sorts by `sort`.
fn link(filter: &Filter, sort: &str) -> String {
    let mut q = vec![format!("sort={}", escape_url(sort))];
    for (k, v) in &filter.labels {
        q.push(format!("label={}", escape_url(&format!("{k}={v}"))));
    }
    if let Some(s) = filter.state {
        let name = serde_json::to_value(s).expect("serialises");
        q.push(format!("state={}", name.as_str().unwrap_or("")));
    }
    format!("?{}", q.join("&"))
}

/// The fleet page.
pub fn fleet(rows: &[Row], filter: &Filter, sort: &str, now_ms: i64) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Buoy fleet</title><style>{STYLE}</style></head><body>"
    );
    let online = rows.iter().filter(|r| r.online).count();
    let problems = rows.iter().filter(|r| !r.problems.is_empty()).count();
    let _ = write!(
        h,
        "<h1>Buoy fleet</h1><p id=\"summary\">{} devices, {online} online, {problems} with problems</p>",
        rows.len()
    );
    let _ = write!(h, "<nav>show: ");
    for (state, name) in [
        (None, "all"),
        (Some("online"), "online"),
        (Some("offline"), "offline"),
        (Some("problem"), "with problems"),
    ] {
        let mut q = format!("?sort={}", escape_url(sort));
        if let Some(s) = state {
            let _ = write!(q, "&state={s}");
        }
        let _ = write!(h, "<a href=\"/{q}\">{name}</a>");
    }
    let _ = write!(h, "</nav><table id=\"devices\"><thead><tr>");
    for (key, title) in [
        ("device", "Device"),
        ("presence", "Presence"),
        ("", "Agent"),
        ("", "Config"),
        ("", "Link"),
        ("backlog", "Backlog"),
        ("age", "Oldest unsent"),
        ("", "Dropped"),
        ("", "Sensors"),
        ("", "Clock"),
        ("", "Labels"),
        ("problems", "Problems"),
    ] {
        if key.is_empty() {
            let _ = write!(h, "<th>{title}</th>");
        } else {
            let _ = write!(
                h,
                "<th><a href=\"/{}\">{title}</a></th>",
                escape(&link(filter, key))
            );
        }
    }
    let _ = write!(h, "</tr></thead><tbody>");
    for r in rows {
        fleet_row(&mut h, r, now_ms);
    }
    let _ = write!(h, "</tbody></table></body></html>");
    h
}

fn fleet_row(h: &mut String, r: &Row, now_ms: i64) {
    let id = escape(&r.device);
    let _ = write!(
        h,
        "<tr class=\"{}\" data-device=\"{id}\" data-online=\"{}\">",
        row_class(r),
        r.online
    );
    let _ = write!(
        h,
        "<td><a href=\"/device/{}\">{id}</a></td>",
        escape_url(&r.device)
    );
    let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cells = [
        presence(r, now_ms),
        r.agent_version.clone().unwrap_or_default(),
        layers_text(r),
        r.link.clone().unwrap_or_default(),
        r.backlog.map_or(String::new(), |n| n.to_string()),
        r.oldest_unsent_age_s.map_or(String::new(), age_text),
        r.dropped.to_string(),
        if r.failing_sensors.is_empty() {
            "ok".into()
        } else {
            format!("failing: {}", r.failing_sensors.join(", "))
        },
        match r.clock_synced {
            Some(true) => "synced".into(),
            Some(false) => "not synced".into(),
            None => String::new(),
        },
        labels.join(" "),
    ];
    for c in cells {
        let _ = write!(h, "<td>{}</td>", escape(&c));
    }
    let _ = write!(
        h,
        "<td class=\"problems\">{}</td></tr>",
        escape(&r.problems.join("; "))
    );
}

/// The config decisions seen, newest first.
fn history_table(h: &mut String, history: &VecDeque<Heard>, now_ms: i64) {
    let _ = write!(
        h,
        "<h2>Config history</h2><table id=\"history\"><tr><th>Seen</th><th>Layer</th><th>Version</th><th>Result</th><th>Reason</th></tr>"
    );
    for e in history.iter().rev() {
        let d = &e.decision;
        let _ = write!(
            h,
            "<tr><td>{} ago</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            age_text((now_ms - e.at_ms) as f64 / 1000.0),
            escape(&d.layer),
            d.version.map_or(String::new(), |v| v.to_string()),
            crate::view::verdict_text(d.result),
            escape(d.reason.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>");
}

/// A device's page: its row, layers, config history and state.
pub fn device(d: &Device, history: &VecDeque<Heard>, now_ms: i64) -> String {
    let r = Row::of(d);
    let id = escape(&d.id);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{id} - Buoy fleet</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(h, "<p><a href=\"/\">&larr; fleet</a></p><h1>{id}</h1>");
    let _ = write!(
        h,
        "<p id=\"presence\" class=\"{}\">{}</p>",
        row_class(&r),
        escape(&presence(&r, now_ms))
    );
    if !r.problems.is_empty() {
        let _ = write!(h, "<h2>Problems</h2><ul class=\"problems\">");
        for p in &r.problems {
            let _ = write!(h, "<li>{}</li>", escape(p));
        }
        let _ = write!(h, "</ul>");
    }
    let _ = write!(
        h,
        "<h2>Config layers</h2><table id=\"layers\"><tr><th>Layer</th><th>Running</th><th>Last version</th><th>Last result</th></tr>"
    );
    for (name, l) in &r.layers {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            l.applied_version,
            l.last_version.map_or(String::new(), |v| v.to_string()),
            l.last_result.unwrap_or("")
        );
    }
    h.push_str("</table>");
    history_table(&mut h, history, now_ms);
    let state = d.state.as_ref().map_or("no state reported".into(), |s| {
        serde_json::to_string_pretty(s).expect("serialises")
    });
    let _ = write!(
        h,
        "<h2>State</h2><pre>{}</pre></body></html>",
        escape(&state)
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(escape_url("site=north sea"), "site%3Dnorth+sea");
    }
}
