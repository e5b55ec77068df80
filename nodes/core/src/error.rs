//! The OCI error codes of the distribution spec (plus distribution's `UNAVAILABLE`), each with
//! the HTTP status it is normally sent with. One place maps failures to what clients see.

/// An error code as it appears in `{"errors":[{"code": ...}]}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciCode {
    BlobUnknown,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    TagInvalid,
    SizeInvalid,
    RangeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// The upstream is unreachable, failed, or sent content that did not verify.
    Unavailable,
    /// Wharf's own fault (storage error); never used for a client's mistake.
    Unknown,
}

impl OciCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OciCode::BlobUnknown => "BLOB_UNKNOWN",
            OciCode::DigestInvalid => "DIGEST_INVALID",
            OciCode::ManifestInvalid => "MANIFEST_INVALID",
            OciCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            OciCode::NameInvalid => "NAME_INVALID",
            OciCode::NameUnknown => "NAME_UNKNOWN",
            OciCode::TagInvalid => "TAG_INVALID",
            OciCode::SizeInvalid => "SIZE_INVALID",
            OciCode::RangeInvalid => "RANGE_INVALID",
            OciCode::Unauthorized => "UNAUTHORIZED",
            OciCode::Denied => "DENIED",
            OciCode::Unsupported => "UNSUPPORTED",
            OciCode::TooManyRequests => "TOOMANYREQUESTS",
            OciCode::Unavailable => "UNAVAILABLE",
            OciCode::Unknown => "UNKNOWN",
        }
    }

    /// The status this code goes with unless the caller knows better (502/503/504 for upstream).
    pub fn default_status(self) -> u16 {
        match self {
            OciCode::BlobUnknown | OciCode::ManifestUnknown | OciCode::NameUnknown => 404,
            OciCode::DigestInvalid
            | OciCode::ManifestInvalid
            | OciCode::NameInvalid
            | OciCode::TagInvalid
            | OciCode::SizeInvalid => 400,
            OciCode::RangeInvalid => 416,
            OciCode::Unauthorized => 401,
            OciCode::Denied => 403,
            OciCode::Unsupported => 405,
            OciCode::TooManyRequests => 429,
            OciCode::Unavailable => 503,
            OciCode::Unknown => 500,
        }
    }

    /// Parse a code an upstream registry sent, to pass it on unchanged.
    pub fn from_code(code: &str) -> Option<OciCode> {
        Some(match code {
            "BLOB_UNKNOWN" => OciCode::BlobUnknown,
            "DIGEST_INVALID" => OciCode::DigestInvalid,
            "MANIFEST_INVALID" => OciCode::ManifestInvalid,
            "MANIFEST_UNKNOWN" => OciCode::ManifestUnknown,
            "NAME_INVALID" => OciCode::NameInvalid,
            "NAME_UNKNOWN" => OciCode::NameUnknown,
            "TAG_INVALID" => OciCode::TagInvalid,
            "SIZE_INVALID" => OciCode::SizeInvalid,
            "UNAUTHORIZED" => OciCode::Unauthorized,
            "DENIED" => OciCode::Denied,
            "UNSUPPORTED" => OciCode::Unsupported,
            "TOOMANYREQUESTS" => OciCode::TooManyRequests,
            "UNAVAILABLE" => OciCode::Unavailable,
            _ => return None,
        })
    }
}

/// The JSON body every error response carries.
pub fn error_body(code: OciCode, message: &str, detail: Option<&str>) -> String {
    let mut entry = serde_json::json!({ "code": code.as_str(), "message": message });
    if let Some(detail) = detail {
        entry["detail"] = serde_json::Value::String(detail.to_string());
    }
    serde_json::json!({ "errors": [entry] }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let body: serde_json::Value =
            serde_json::from_str(&error_body(OciCode::BlobUnknown, "blob unknown", Some("d")))
                .unwrap();
        assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(body["errors"][0]["detail"], "d");
        assert_eq!(
            OciCode::from_code("BLOB_UNKNOWN"),
            Some(OciCode::BlobUnknown)
        );
    }
}
