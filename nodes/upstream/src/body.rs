//! Bounded reads of upstream bodies: a hostile or broken upstream, parent, token realm or CDN
//! can send any number of bytes, and none of them may cost the node more than a fixed amount
//! of memory, nor reach a client unabridged.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::error::UpstreamError;

/// The most of an error body (404, 400, 414) or a token answer that is read.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most of an upstream's message passed on to a client.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// The whole body, or [`UpstreamError::ManifestTooLarge`] once it passes `limit` (reading
/// stops there).
pub async fn read_limited(response: reqwest::Response, limit: u64) -> Result<Bytes, UpstreamError> {
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::from_reqwest(&e))?;
        let total = (body.len() as u64).saturating_add(chunk.len() as u64);
        if total > limit {
            return Err(UpstreamError::ManifestTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// At most [`MAX_ERROR_BODY`] bytes of a body that only explains an error; `None` when it is
/// longer (its words are not worth more) or breaks off. The rest is never read: dropping the
/// response closes the connection.
pub async fn read_error_body(response: reqwest::Response) -> Option<Bytes> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ERROR_BODY as u64)
    {
        return None;
    }
    read_limited(response, MAX_ERROR_BODY as u64).await.ok()
}

/// An upstream's message as a client may see it: one line, at most [`MAX_MESSAGE_CHARS`]
/// characters.
pub fn clip_message(message: &str) -> String {
    let line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS.saturating_add(1))
        .collect();
    if line.chars().count() > MAX_MESSAGE_CHARS {
        let mut clipped: String = line.chars().take(MAX_MESSAGE_CHARS).collect();
        clipped.push('…');
        clipped
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_clipped_to_one_short_line() {
        assert_eq!(clip_message("manifest unknown"), "manifest unknown");
        assert_eq!(clip_message("a\nb\u{0}c"), "a b c");
        let long = "x".repeat(10 * MAX_MESSAGE_CHARS);
        let clipped = clip_message(&long);
        assert_eq!(clipped.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(clipped.ends_with('…'));
    }
}
