//! The HTML timeline: one self-contained page (inline SVG and CSS, no
//! script, nothing fetched) with, per client address, a client lane and a
//! server lane and one arrow per datagram in arrival order. Drops end in a
//! cross halfway, retransmissions are dashed, violations are red with the
//! rule named; hovering any arrow shows its details. Beyond
//! [`ROWS_PER_FLOW`](crate::record::ROWS_PER_FLOW) datagrams per address,
//! or [`ROWS_TOTAL`](crate::record::ROWS_TOTAL) in all, the rest are counted
//! instead of drawn.

use std::fmt::Write as _;

use crate::check::{CheckParams, Side};
use crate::record::{FlowRecord, Kind, Recorder, Row};

/// Height of one datagram's row, in pixels.
const ROW: usize = 18;
const TOP: usize = 46;
const WIDTH: usize = 1200;
const CLIENT_X: usize = 150;
const SERVER_X: usize = 830;
const MID_X: usize = (CLIENT_X + SERVER_X) / 2;

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn colour(row: &Row) -> &'static str {
    if !row.violations.is_empty() {
        return "bad";
    }
    if row.retransmission {
        return "re";
    }
    match row.kind {
        Kind::Connect => "connect",
        Kind::Data => "data",
        Kind::Ack | Kind::CAck => "ack",
        Kind::Heartbeat => "hb",
        Kind::Malformed => "bad",
    }
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #222; }
h1 { font-size: 20px; margin: 0 0 8px; }
h2 { font-size: 16px; margin: 24px 0 4px; }
pre { background: #f4f4f4; padding: 8px; overflow-x: auto; font-size: 12px; }
table { border-collapse: collapse; font-size: 12px; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
.legend span { display: inline-block; margin-right: 14px; }
.sw { display: inline-block; width: 22px; height: 3px; vertical-align: middle; margin-right: 4px; }
svg text { font: 11px ui-monospace, monospace; }
svg .lane { stroke: #444; stroke-width: 2; }
svg .lanelabel { font: bold 13px system-ui, sans-serif; }
svg .t { fill: #777; }
svg .data { stroke: #1f5fbf; fill: #1f5fbf; }
svg .ack { stroke: #2a8a2a; fill: #2a8a2a; }
svg .hb { stroke: #aaa; fill: #999; }
svg .connect { stroke: #8a2be2; fill: #8a2be2; }
svg .re { stroke: #e07b00; fill: #e07b00; }
svg .bad { stroke: #d00; fill: #d00; }
svg line { stroke-width: 1.5; }
svg line.re, svg line.dashed { stroke-dasharray: 6 3; }
svg text.data, svg text.ack, svg text.hb, svg text.connect, svg text.re, svg text.bad { stroke: none; }
svg .fate { fill: #b00; font-style: italic; }
svg .rule { fill: #d00; font-weight: bold; }
svg rect.vrow { fill: #ffe3e3; }
svg .cross { stroke: #d00; stroke-width: 2.5; }
";

/// Renders the whole page.
pub fn render(rec: &Recorder, params: &CheckParams, summary: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>lsp-inspect timeline</title><style>{STYLE}</style></head><body>\n\
         <h1>lsp-inspect timeline</h1>\n<p>Epoch {} ms, epoch limit {}, window {}, max unacked {}, max back-off {}; \
         timer jitter allowed {} ms. Time runs downward, one row per datagram as the proxy received it.</p>\n",
        params.epoch.as_millis(),
        params.epoch_limit,
        params.window,
        params.max_unacked,
        params.max_backoff,
        params.jitter.as_millis()
    );
    h.push_str("<pre>");
    h.push_str(&escape(summary));
    h.push_str("</pre>\n<p class=\"legend\">");
    for (class, colour, what) in [
        ("data", "#1f5fbf", "Data"),
        ("ack", "#2a8a2a", "Ack / CAck"),
        ("hb", "#aaa", "heartbeat"),
        ("connect", "#8a2be2", "Connect"),
        ("re", "#e07b00", "retransmitted Data (dashed)"),
        ("bad", "#d00", "violation (rule named on the right)"),
    ] {
        let _ = write!(
            h,
            "<span><i class=\"sw {class}\" style=\"background:{colour}\"></i>{what}</span>"
        );
    }
    h.push_str("<span><b style=\"color:#d00\">&#x2715;</b> dropped by the proxy</span></p>\n");
    if rec.flows.is_empty() {
        h.push_str("<p>No datagrams.</p>\n");
    }
    for (i, flow) in rec.flows_in_order() {
        flow_section(&mut h, i, flow);
    }
    violations_table(&mut h, rec);
    h.push_str("</body></html>\n");
    h
}

fn flow_section(h: &mut String, i: usize, flow: &FlowRecord) {
    let mut ids: Vec<String> = flow.conns.iter().map(u32::to_string).collect();
    if flow.conns_more > 0 {
        ids.push("and more".to_string());
    }
    let _ = writeln!(
        h,
        "<h2>Client {} &mdash; ConnID {}</h2>",
        escape(&flow.client.to_string()),
        if ids.is_empty() {
            "none yet".to_string()
        } else {
            ids.join(", ")
        }
    );
    let height = TOP + flow.rows.len() * ROW + 24;
    let _ = writeln!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"datagrams of client {i}\">"
    );
    h.push_str("<defs>");
    for class in ["data", "ack", "hb", "connect", "re", "bad"] {
        let _ = write!(
            h,
            "<marker id=\"m{i}-{class}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path class=\"{class}\" d=\"M0,0 L10,5 L0,10 z\"/></marker>"
        );
    }
    h.push_str("</defs>\n");
    let bottom = height - 10;
    let _ = writeln!(
        h,
        "<text class=\"lanelabel\" x=\"{CLIENT_X}\" y=\"18\" text-anchor=\"middle\">client</text>\
         <text class=\"lanelabel\" x=\"{SERVER_X}\" y=\"18\" text-anchor=\"middle\">server</text>\
         <text class=\"t\" x=\"8\" y=\"18\">time (s)</text>\
         <line class=\"lane\" x1=\"{CLIENT_X}\" y1=\"26\" x2=\"{CLIENT_X}\" y2=\"{bottom}\"/>\
         <line class=\"lane\" x1=\"{SERVER_X}\" y1=\"26\" x2=\"{SERVER_X}\" y2=\"{bottom}\"/>"
    );
    for (r, row) in flow.rows.iter().enumerate() {
        draw_row(h, i, r, row);
    }
    h.push_str("</svg>\n");
    if flow.omitted.datagrams > 0 {
        let _ = writeln!(
            h,
            "<p><b>{} more datagrams not drawn</b> (up to {:.3} s): {}</p>",
            flow.omitted.datagrams,
            flow.last_at.as_secs_f64(),
            escape(&flow.omitted.describe("; "))
        );
    }
}

fn draw_row(h: &mut String, flow: usize, r: usize, row: &Row) {
    let y = TOP + r * ROW;
    let class = colour(row);
    let (from_x, to_x) = match row.from {
        Side::Client => (CLIENT_X, SERVER_X),
        Side::Server => (SERVER_X, CLIENT_X),
    };
    let mut tip = format!(
        "#{} at {:.3} s, {} to {}: {}",
        row.index,
        row.at.as_secs_f64(),
        row.from.name(),
        row.from.other().name(),
        row.label
    );
    if row.retransmission {
        tip.push_str(" (retransmission)");
    }
    if !row.fate.is_empty() {
        let _ = write!(tip, "; proxy: {}", row.fate);
    }
    for (rule, detail) in &row.violations {
        let _ = write!(tip, "\nVIOLATION {rule}: {detail}");
    }
    let _ = write!(h, "<g><title>{}</title>", escape(&tip));
    if !row.violations.is_empty() {
        let _ = write!(
            h,
            "<rect class=\"vrow\" x=\"0\" y=\"{}\" width=\"{WIDTH}\" height=\"{ROW}\"/>",
            y - ROW + 5
        );
    }
    let _ = write!(
        h,
        "<text class=\"t\" x=\"8\" y=\"{y}\">{:.3}</text>",
        row.at.as_secs_f64()
    );
    let line_y = y - 4;
    let end_x = if row.dropped { MID_X } else { to_x };
    let marker = if row.dropped {
        String::new()
    } else {
        format!(" marker-end=\"url(#m{flow}-{class})\"")
    };
    // A retransmission stays dashed when it is also a violation.
    let dashed = if row.retransmission { " dashed" } else { "" };
    let _ = write!(
        h,
        "<line class=\"{class}{dashed}\" x1=\"{from_x}\" y1=\"{line_y}\" x2=\"{end_x}\" y2=\"{line_y}\"{marker}/>"
    );
    if row.dropped {
        let _ = write!(
            h,
            "<path class=\"cross\" d=\"M{},{} l10,10 m0,-10 l-10,10\"/>",
            MID_X - 5,
            line_y - 5
        );
    }
    // The label sits just off the sender's lane, above the arrow.
    let (label_x, anchor) = match row.from {
        Side::Client => (CLIENT_X + 8, "start"),
        Side::Server => (SERVER_X - 8, "end"),
    };
    let _ = write!(
        h,
        "<text class=\"{class}\" x=\"{label_x}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
        line_y - 3,
        escape(&clip(&row.label, 44))
    );
    if !row.fate.is_empty() {
        let fate_x = match row.from {
            Side::Client => MID_X + 12,
            Side::Server => MID_X - 12,
        };
        let _ = write!(
            h,
            "<text class=\"fate\" x=\"{fate_x}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            line_y - 3,
            escape(&row.fate)
        );
    }
    if !row.violations.is_empty() {
        let rules: Vec<&str> = row.violations.iter().map(|(r, _)| r.name()).collect();
        let _ = write!(
            h,
            "<text class=\"rule\" x=\"{}\" y=\"{y}\">&#x26a0; {}</text>",
            SERVER_X + 14,
            escape(&rules.join(", "))
        );
    }
    h.push_str("</g>\n");
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn violations_table(h: &mut String, rec: &Recorder) {
    let total = rec.violation_count();
    let _ = writeln!(h, "<h2>Violations: {total}</h2>");
    if total == 0 {
        h.push_str("<p>None: every datagram kept to the rules the proxy checks.</p>\n");
        return;
    }
    h.push_str("<table><tr><th>datagram</th><th>time (s)</th><th>side</th><th>conn</th><th>rule</th><th>what</th></tr>\n");
    for v in &rec.violations {
        let _ = writeln!(
            h,
            "<tr><td>#{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            v.datagram,
            v.at.as_secs_f64(),
            v.side.name(),
            v.conn.map_or(String::new(), |c| c.to_string()),
            v.rule,
            escape(&v.detail)
        );
    }
    h.push_str("</table>\n");
    if (rec.violations.len() as u64) < total {
        let _ = writeln!(
            h,
            "<p>{} more not listed (see the log).</p>",
            total - rec.violations.len() as u64
        );
    }
}
