//! Manifest media types and `Accept` negotiation.

pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Every manifest type wharf fetches and caches; sent upstream as one `Accept` list so the
/// cached bytes for a tag are the same whatever the first client asked for.
pub const MANIFEST_TYPES: [&str; 4] = [
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST_V2,
];

/// The `Accept` header wharf sends upstream for manifests.
pub fn upstream_accept_header() -> String {
    MANIFEST_TYPES.join(", ")
}

/// Does a client's `Accept` header values admit `media_type`?
///
/// No `Accept` at all, `*/*`, or an `Accept` naming no manifest type at all means "anything"
/// (curl, simple scripts); otherwise the type must be listed. Parameters (`;q=`) are ignored.
pub fn accepts<'a>(accept_values: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    // One pass, no allocation, done at the first item that decides: this runs on every
    // manifest request.
    let mut names_manifest_type = false;
    for value in accept_values {
        let mut rest = value;
        loop {
            let (listed_type, next) = first_item(rest);
            let listed_type = listed_type.trim();
            if (listed_type == media_type && !listed_type.is_empty()) || listed_type == "*/*" {
                return true;
            }
            names_manifest_type = names_manifest_type || MANIFEST_TYPES.contains(&listed_type);
            match next {
                Some(next) => rest = next,
                None => break,
            }
        }
    }
    !names_manifest_type
}

/// The type of a list's first item (before any `;`, untrimmed) and the rest after its `,`,
/// found with SIMD byte searches (`split` and `split_once` each set up a searcher).
fn first_item(list: &str) -> (&str, Option<&str>) {
    let bytes = list.as_bytes();
    match memchr::memchr2(b',', b';', bytes) {
        None => (list, None),
        Some(comma) if bytes[comma] == b',' => (&list[..comma], Some(&list[comma + 1..])),
        Some(semicolon) => {
            let rest = memchr::memchr(b',', &bytes[semicolon..])
                .map(|comma| &list[semicolon + comma + 1..]);
            (&list[..semicolon], rest)
        }
    }
}

/// The media type a manifest's own bytes establish, which its digest covers (a
/// `Content-Type` is not): its `mediaType`, else, since OCI lets it be left out, an image
/// index when it lists `manifests` and an image manifest when it has `config` or `layers`.
/// `None` when the bytes say neither (not JSON, or schema 1).
pub fn media_type_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
        layers: Option<serde::de::IgnoredAny>,
    }
    let probe = serde_json::from_slice::<Probe>(body).ok()?;
    match probe {
        Probe {
            media_type: Some(t),
            ..
        } => Some(t),
        Probe {
            manifests: Some(_), ..
        } => Some(OCI_INDEX.to_string()),
        Probe {
            config: Some(_), ..
        }
        | Probe {
            layers: Some(_), ..
        } => Some(OCI_MANIFEST.to_string()),
        _ => None,
    }
}

/// The media type a manifest declares in its own `mediaType` field, if any.
pub fn declared_media_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(body).ok()?.media_type
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first, plainer form of [`accepts`]: every item read, the verdict at the end.
    fn accepts_reference(values: &[&str], media_type: &str) -> bool {
        let (mut listed, mut anything, mut names_manifest_type, mut lists_it) =
            (false, false, false, false);
        for item in values.iter().flat_map(|v| v.split(',')) {
            let listed_type = item.split(';').next().unwrap_or("").trim();
            if listed_type.is_empty() {
                continue;
            }
            listed = true;
            anything |= listed_type == "*/*";
            names_manifest_type |= MANIFEST_TYPES.contains(&listed_type);
            lists_it |= listed_type == media_type;
        }
        !listed || anything || !names_manifest_type || lists_it
    }

    proptest::proptest! {
        #[test]
        fn early_verdicts_are_the_full_readings(
            items in proptest::collection::vec(proptest::sample::select(vec![
                OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_V2, "*/*", "application/json", "", " ",
                "text/html;q=0.1", "application/vnd.oci.image.index.v1+json; q=0.5",
            ]), 0..6),
            split in 0usize..6,
            media_type in proptest::sample::select(vec![OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_V2, ""]),
        ) {
            let joined = items.join(",");
            let at = split.min(items.len());
            let (first, second) = (items[..at].join(","), items[at..].join(","));
            proptest::prop_assert_eq!(accepts([joined.as_str()], media_type), accepts_reference(&[&joined], media_type));
            proptest::prop_assert_eq!(
                accepts([first.as_str(), second.as_str()], media_type),
                accepts_reference(&[&first, &second], media_type)
            );
        }
    }

    #[test]
    fn negotiation() {
        assert!(accepts([], OCI_INDEX));
        assert!(accepts(["*/*"], OCI_INDEX));
        assert!(accepts(["application/json"], OCI_INDEX));
        assert!(accepts(
            [
                "application/vnd.oci.image.manifest.v1+json; q=0.5, application/vnd.oci.image.index.v1+json"
            ],
            OCI_INDEX
        ));
        assert!(!accepts([DOCKER_MANIFEST_V2], OCI_INDEX));
        assert!(accepts([DOCKER_MANIFEST_V2, OCI_INDEX], OCI_INDEX));
    }

    #[test]
    fn declared_type() {
        assert_eq!(
            declared_media_type(br#"{"mediaType":"x/y","schemaVersion":2}"#).as_deref(),
            Some("x/y")
        );
        assert_eq!(declared_media_type(b"{}"), None);
        assert_eq!(declared_media_type(b"not json"), None);
    }
}
