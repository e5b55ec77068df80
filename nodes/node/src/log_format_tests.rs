use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{Format, JsonFields};

use super::*;

/// Lines written by a subscriber, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// An access line with every kind of value the edge writes, and strings that need escaping.
fn access_lines() {
    let client: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let method = axum_like_method();
    tracing::info!(
        target: "wharf::access",
        method = %method,
        path = %"/v2/team/app/manifests/v1?ns=quay.io",
        status = 200u16,
        bytes = 1234u64,
        duration_ms = 3.744f64,
        cache = "hit",
        upstream = "quay.io",
        client = %client,
        user = "",
        request_id = %"0123abcd00000001",
        complete = true,
    );
    tracing::info!(
        target: "wharf::access",
        duration_ms = 0.0f64,
        user = "a \"quoted\" name\\ with\ttab and ünïcode",
        negative = -3i64,
        complete = false,
    );
    tracing::info!(target: "wharf::other", "not an access line");
}

fn axum_like_method() -> &'static str {
    "GET"
}

/// The same events through `format` and through tracing-subscriber's own; each line with its
/// timestamp cut off, and the timestamps.
fn both(style: Style) -> (Vec<String>, Vec<String>, Vec<String>) {
    let ours = Captured::default();
    let theirs = Captured::default();
    match style {
        Style::Text => {
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(ours.clone())
                .event_format(LogFormat::new(Format::default(), Style::Text))
                .finish();
            tracing::subscriber::with_default(subscriber, access_lines);
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(theirs.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, access_lines);
        }
        Style::Json => {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_writer(ours.clone())
                .event_format(LogFormat::new(Format::default().json(), Style::Json))
                .fmt_fields(JsonFields::new())
                .finish();
            tracing::subscriber::with_default(subscriber, access_lines);
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_writer(theirs.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, access_lines);
        }
    }
    let cut = |text: String| -> (Vec<String>, Vec<String>) {
        text.lines()
            .map(|line| {
                let at = line.find('Z').unwrap();
                let start = if style == Style::Json {
                    "{\"timestamp\":\"".len()
                } else {
                    0
                };
                (
                    line[..start].to_string() + &line[at..],
                    line[start..at].to_string(),
                )
            })
            .unzip()
    };
    let (our_lines, our_times) = cut(ours.text());
    let (their_lines, _) = cut(theirs.text());
    (our_lines, their_lines, our_times)
}

#[test]
fn access_lines_are_the_text_tracing_subscriber_writes() {
    let (ours, theirs, times) = both(Style::Text);
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert_eq!(ours, theirs);
    assert!(ours[0].contains("path=/v2/team/app/manifests/v1?ns=quay.io "));
    assert!(ours[0].contains(" INFO wharf::access: method=GET "));
    let now = second_text(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    for time in times {
        assert_eq!(time.len(), 26, "{time}");
        assert_eq!(
            time[..11],
            std::str::from_utf8(&now).unwrap()[..11],
            "{time}"
        );
    }
}

#[test]
fn access_lines_are_the_json_tracing_subscriber_writes() {
    let (ours, theirs, _) = both(Style::Json);
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert_eq!(ours, theirs);
    let line: serde_json::Value =
        serde_json::from_str(&ours[1].replacen("Z\"", "2026-01-01T00:00:00.000000Z\"", 1)).unwrap();
    assert_eq!(line["fields"]["duration_ms"], 0.0);
    assert_eq!(line["fields"]["negative"], -3);
}

#[test]
fn dates_and_times_of_day_are_the_calendars() {
    let at = |secs: u64| String::from_utf8(second_text(secs).to_vec()).unwrap();
    assert_eq!(at(0), "1970-01-01T00:00:00.");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00.");
    assert_eq!(at(1_709_164_799), "2024-02-28T23:59:59.");
    assert_eq!(at(1_798_761_599), "2026-12-31T23:59:59.");
    assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00.");
    assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00.");
    assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59.");
}
