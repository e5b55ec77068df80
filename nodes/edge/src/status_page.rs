//! The status page: one server-rendered HTML document from a [`StatusReport`], refreshed by
//! the browser every 2 seconds. Every value from outside (names, errors) is escaped.

use std::fmt::Write;

use crate::status::StatusReport;

fn escape(s: &str) -> String {
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

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

fn ago(at: Option<u64>, now: u64) -> String {
    match at {
        Some(at) => format!("{} ago", duration(now.saturating_sub(at))),
        None => "never".into(),
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;min-width:40em}td,th{padding:.3em .8em;text-align:left;\
border-bottom:1px solid #ddd}th{background:#f4f4f4}.ok{color:#17803d}.bad{color:#b42318}\
.bar{width:16em;height:.9em;background:#eee;border-radius:3px;display:inline-block}\
.fill{height:100%;background:#2f6fdf;border-radius:3px}.num{font-variant-numeric:tabular-nums}\
.tiles{display:flex;gap:1em;flex-wrap:wrap}.tile{border:1px solid #ddd;border-radius:6px;\
padding:.6em 1em}.tile b{display:block;font-size:1.5em}";

/// The whole page.
pub fn render(r: &StatusReport) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"2\"><title>wharf status</title><style>{STYLE}</style>\
</head><body><h1>wharf {} <small>({})</small></h1><p>Up {}.</p>",
        escape(r.version),
        escape(r.commit),
        duration(r.uptime_secs)
    );
    let ratio = r
        .cache
        .hit_ratio
        .map_or("–".to_string(), |v| format!("{:.1}%", v * 100.0));
    let quota = if r.store.quota_bytes > 0 {
        format!(" of {}", human_bytes(r.store.quota_bytes))
    } else {
        String::new()
    };
    let _ = write!(
        h,
        "<h2>Cache</h2><div class=\"tiles\">\
<div class=\"tile\" id=\"hit-ratio\">hit ratio<b>{ratio}</b></div>\
<div class=\"tile\" id=\"bytes-saved\">served from cache<b>{}</b></div>\
<div class=\"tile\">fetched and served<b>{}</b></div>\
<div class=\"tile\" id=\"store-size\">store ({})<b>{}{quota}</b>{} blobs, {}</div></div>",
        human_bytes(r.cache.bytes_from_cache),
        human_bytes(r.cache.bytes_fetched),
        r.store.backend,
        human_bytes(r.store.bytes),
        r.store.blobs,
        status_span(r.store.status == "ok", r.store.status),
    );
    if let Some(e) = &r.store.error {
        let _ = write!(h, "<p class=\"bad\">store: {}</p>", escape(e));
    }
    if let Some(hot) = &r.store.hot_cache {
        let _ = write!(
            h,
            "<p id=\"hot-tier\">hot tier: {} copies, {} of {} on local disk; {} reads from it, \
{} from S3, {} filled, {} dropped (evicted from S3)</p>",
            hot.copies,
            human_bytes(hot.bytes),
            human_bytes(hot.max_bytes),
            hot.hits,
            hot.misses,
            hot.fills,
            hot.dropped
        );
    }
    let _ = write!(h, "<p>requests:");
    for (outcome, n) in &r.cache.requests {
        let _ = write!(h, " {outcome} <span class=\"num\">{n}</span>;");
    }
    h.push_str("</p>");

    if !r.prefetch.is_empty() {
        h.push_str(
            "<h2>Prefetch</h2><table id=\"prefetch\"><tr><th>image</th><th>last pass</th>\
<th>passes</th><th>tags</th><th>fetched</th><th>state</th></tr>",
        );
        for p in &r.prefetch {
            let state = match (&p.paused, &p.last_error) {
                (Some(why), _) => format!("<span>{}</span>", escape(why)),
                (None, Some(e)) => status_span(false, &e.chars().take(200).collect::<String>()),
                (None, None) if p.passes == 0 => "<span>not run here</span>".to_string(),
                (None, None) => status_span(true, "ok"),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td>\
<td class=\"num\">{} blobs, {}</td><td>{state}</td></tr>",
                escape(&p.image),
                ago(p.last_pass, now),
                p.passes,
                escape(&p.tags.join(", ")),
                p.blobs_fetched,
                human_bytes(p.bytes_fetched),
            );
        }
        h.push_str("</table>");
    }

    h.push_str(
        "<h2>Upstreams</h2><table id=\"upstreams\"><tr><th>name</th><th>URL</th>\
<th>health</th><th>last answer</th><th>last error</th><th>pull allowance</th></tr>",
    );
    for u in &r.upstreams {
        let s = &u.status;
        let health = match (s.requests, s.healthy) {
            (0, _) => "<span>not used yet</span>".to_string(),
            (_, true) => status_span(true, "ok"),
            (_, false) => status_span(false, "failing"),
        };
        let error = match &s.last_error {
            Some(e) => format!("{} ({})", escape(e), ago(s.last_error_at, now)),
            None => "–".into(),
        };
        let allowance = match (s.ratelimit_remaining, s.ratelimit_limit) {
            (Some(rem), Some(limit)) => format!("{rem} of {limit} left"),
            (Some(rem), None) => format!("{rem} left"),
            _ => "not announced".into(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{health}</td><td>{}</td><td>{error}</td>\
<td>{allowance}</td></tr>",
            escape(&u.name),
            escape(&u.url),
            ago(s.last_answer, now),
        );
    }
    h.push_str("</table>");

    let _ = write!(
        h,
        "<h2>Downloads in flight ({})</h2><table id=\"downloads\"><tr><th>blob</th>\
<th>repository</th><th>progress</th><th>rate</th><th>waiting clients</th><th>fetched by</th>\
</tr>",
        r.downloads.len()
    );
    if r.downloads.is_empty() {
        h.push_str("<tr><td colspan=\"6\">none</td></tr>");
    }
    for d in &r.downloads {
        let (pct, of) = match d.size {
            Some(size) if size > 0 => (
                (d.received as f64 / size as f64 * 100.0).min(100.0),
                human_bytes(size),
            ),
            _ => (0.0, "?".into()),
        };
        let short = d.digest.get(..19).unwrap_or(&d.digest);
        let pieces = match &d.chunks {
            Some(c) => format!(
                " <span class=\"num\">{} pieces in flight, {} waiting</span>",
                c.fetching, c.waiting
            ),
            None => String::new(),
        };
        let _ = write!(
            h,
            "<tr><td title=\"{}\">{}…</td><td>{}/{}</td><td><span class=\"bar\">\
<span class=\"fill\" style=\"display:block;width:{pct:.0}%\"></span></span> \
<span class=\"num\">{} of {of} ({pct:.0}%)</span> {}{pieces}</td><td class=\"num\">{}/s</td>\
<td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&d.digest),
            escape(short),
            escape(&d.upstream),
            escape(&d.repository),
            human_bytes(d.received),
            d.phase,
            human_bytes(d.rate as u64),
            d.waiters,
            if d.source == "peer" {
                "a cluster peer"
            } else {
                "this node"
            },
        );
    }
    h.push_str("</table>");

    if let Some(c) = &r.cluster {
        let leader = c.leader_id.map_or("none".to_string(), |l| l.to_string());
        let _ = write!(
            h,
            "<h2>Cluster</h2><p id=\"cluster\">node {} · leader {leader} · {} members · term {} \
· {} leases held here · {} fallbacks · {}</p>",
            c.node_id,
            c.members,
            c.term,
            c.leases_held,
            c.fallbacks,
            status_span(c.ok, if c.ok { "quorum" } else { "no quorum" }),
        );
        h.push_str("<table id=\"members\"><tr><th>member</th><th>address</th><th>role</th><th>last answered</th><th>health</th></tr>");
        for m in &c.roster {
            let contact = match m.last_contact_ms {
                Some(ms) => format!("{ms} ms ago"),
                None if m.id == c.node_id => "this node".to_string(),
                None => "-".to_string(),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{contact}</td><td>{}</td></tr>",
                m.id,
                escape(&m.addr),
                m.role,
                m.health
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Recent errors</h2><table id=\"errors\"><tr><th>when</th><th>status</th><th>code</th><th>message</th></tr>");
    if r.recent_errors.is_empty() {
        h.push_str("<tr><td colspan=\"4\">none</td></tr>");
    }
    for e in &r.recent_errors {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ago(Some(e.at), now),
            e.status,
            e.code,
            escape(&e.message)
        );
    }
    h.push_str("</table><p><a href=\"/status.json\">status.json</a> · <a href=\"/metrics\">metrics</a></p></body></html>");
    h
}

fn status_span(ok: bool, text: &str) -> String {
    format!(
        "<span class=\"{}\">{}</span>",
        if ok { "ok" } else { "bad" },
        escape(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_is_escaped_and_sizes_are_readable() {
        assert_eq!(
            escape("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(duration(3725), "1h 2m");
    }
}
