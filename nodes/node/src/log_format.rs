//! The log's line format. Every event is written by tracing-subscriber's own text or JSON
//! format, except access lines (target `wharf::access`, one a request, the bulk of a busy
//! node's log): those are written here, field by field straight into the line, with the
//! timestamp's date and time of day made once a second. The text is byte for byte what the
//! inner format writes (a unit test holds them side by side); an access line inside a span, or
//! on a colour terminal, goes to the inner format too.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The tracing target of access lines.
pub const ACCESS_TARGET: &str = "wharf::access";

/// Which of the two line formats the node writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `2026-12-06T22:01:23.123456Z  INFO target: field=value ...`
    Text,
    /// `{"timestamp":...,"level":"INFO","fields":{...},"target":...}`
    Json,
}

/// An event format that writes access lines itself and hands every other event to `inner`.
pub struct LogFormat<F> {
    inner: F,
    style: Style,
}

impl<F> LogFormat<F> {
    /// `inner` must be tracing-subscriber's full text format for [`Style::Text`] and its JSON
    /// format for [`Style::Json`], with their default options.
    pub fn new(inner: F, style: Style) -> LogFormat<F> {
        LogFormat { inner, style }
    }
}

impl<S, N, F> FormatEvent<S, N> for LogFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let plain = event.metadata().target() == ACCESS_TARGET
            && !writer.has_ansi_escapes()
            && event.parent().is_none()
            && (event.is_root() || ctx.lookup_current().is_none());
        if !plain {
            return self.inner.format_event(ctx, writer, event);
        }
        let level = event.metadata().level();
        match self.style {
            Style::Text => {
                write_timestamp(&mut writer)?;
                // The inner format pads the level to five characters.
                write!(writer, " {level:>5} {ACCESS_TARGET}: ")?;
                let mut fields = TextFields {
                    writer: &mut writer,
                    first: true,
                    result: Ok(()),
                };
                event.record(&mut fields);
                fields.result?;
                writer.write_char('\n')
            }
            Style::Json => {
                writer.write_str("{\"timestamp\":\"")?;
                write_timestamp(&mut writer)?;
                write!(writer, "\",\"level\":\"{level}\",\"fields\":{{")?;
                let mut fields = JsonFields {
                    writer: &mut writer,
                    first: true,
                    result: Ok(()),
                };
                event.record(&mut fields);
                fields.result?;
                writeln!(writer, "}},\"target\":\"{ACCESS_TARGET}\"}}")
            }
        }
    }
}

/// `name=value` pairs as tracing-subscriber's default fields format writes them: strings
/// quoted as `Debug` quotes them, every other value as its `Debug`.
struct TextFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextFields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        let name = field.name();
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }
}

impl Visit for TextFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| {
                if needs_no_escape(value) {
                    self.writer.write_char('"')?;
                    self.writer.write_str(value)?;
                    self.writer.write_char('"')
                } else {
                    write!(self.writer, "{value:?}")
                }
            });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self
                .name(field)
                .and_then(|()| write!(self.writer, "{value:?}"));
        }
    }
}

/// `"name":value` members as tracing-subscriber's JSON format writes them: strings, numbers
/// and booleans as JSON, every other value as the JSON string of its `Debug`.
struct JsonFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn member(&mut self, field: &Field, value: impl serde::Serialize) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(',')?;
        }
        let mut out = FmtIo(self.writer);
        serde_json::to_writer(&mut out, field.name())
            .and_then(|()| std::io::Write::write_all(&mut out, b":").map_err(serde_json::Error::io))
            .and_then(|()| serde_json::to_writer(&mut out, &value))
            .map_err(|_| fmt::Error)
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.member(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_ok() {
            self.result = self.member(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.result.is_ok() {
            self.result = self.member(field, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.result.is_ok() {
            self.result = self.member(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_ok() {
            self.result = self.member(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.member(field, DebugAsString(value));
        }
    }
}

/// A `Debug` value serialized as the JSON string of its text, written without a `String`.
struct DebugAsString<'a>(&'a dyn fmt::Debug);

impl serde::Serialize for DebugAsString<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:?}", self.0))
    }
}

/// serde_json's `io::Write` output onto the line's `fmt::Write` (serde_json writes whole
/// UTF-8 pieces).
struct FmtIo<'a, 'w>(&'a mut Writer<'w>);

impl std::io::Write for FmtIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.0.write_str(text).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Printable ASCII without `"` or `\`: what `Debug` of a `str` writes as is.
fn needs_no_escape(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

thread_local! {
    /// The second last written on this thread and its `YYYY-MM-DDTHH:MM:SS.` text.
    static SECOND: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [0; 20])) };
}

/// Now as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), as tracing-subscriber's
/// `SystemTime` timer writes it; the part before the fraction is made once a second a thread.
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return writer.write_str("<unknown time>");
    };
    let secs = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, second_text(secs));
        }
        // Only ASCII digits and separators are ever put in the text.
        writer.write_str(std::str::from_utf8(&cached.1).map_err(|_| fmt::Error)?)
    })?;
    let micros = now.subsec_micros();
    let mut fraction = [b'0'; 7];
    let mut rest = micros;
    for digit in fraction[..6].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    fraction[6] = b'Z';
    writer.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix second (years 1970 to 9999).
fn second_text(secs: u64) -> [u8; 20] {
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, value: u64| {
        let mut value = value;
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.min(9999));
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    text
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[path = "log_format_tests.rs"]
mod tests;
