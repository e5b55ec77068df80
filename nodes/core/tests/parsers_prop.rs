//! Property tests of every parser that reads what clients and upstreams send: on any input
//! they answer (never panic), and what they accept is well-formed and round-trips.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use wharf_core::config::Config;
use wharf_core::range::{RangeRequest, RangeSpec, resolve};
use wharf_core::{Digest, Reference, RepoName, Tag, media};

/// Strings near the grammar: the characters parsers look at, plus anything.
fn wild() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._/:-]{0,300}",
        "(sha256|sha512|md5|SHA256):[0-9a-fA-Fxz]{0,140}",
        "bytes=[0-9 ,-]{0,40}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn digests_parse_or_refuse_and_round_trip(s in wild()) {
        if let Ok(d) = s.parse::<Digest>() {
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d.clone());
            prop_assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn names_and_tags_accepted_are_path_safe(s in wild()) {
        if let Ok(name) = s.parse::<RepoName>() {
            prop_assert!(name.as_str().len() <= wharf_core::name::MAX_NAME_LEN);
            prop_assert!(!name.as_str().split('/').any(|c| c.is_empty() || c == "." || c == ".."));
            let _ = name.with_docker_hub_library();
        }
        if let Ok(tag) = s.parse::<Tag>() {
            prop_assert!(tag.as_str().len() <= 128 && !tag.as_str().starts_with('.'));
            prop_assert!(!tag.as_str().contains('/'));
        }
        if let Ok(reference) = Reference::parse(&s) {
            prop_assert_eq!(Reference::parse(&reference.to_string()).unwrap(), reference);
        }
    }

    #[test]
    fn ranges_resolve_inside_the_blob(header in wild(), size in prop_oneof![Just(0u64), 1u64..10_000, Just(u64::MAX)]) {
        let _ = RangeSpec::parse(&header);
        match resolve(Some(&header), size) {
            RangeRequest::Partial(r) => {
                prop_assert!(r.start <= r.end && r.end < size);
                prop_assert_eq!(r.len(), r.end - r.start + 1);
            }
            RangeRequest::Full | RangeRequest::Unsatisfiable => {}
        }
    }

    #[test]
    fn media_type_sniffing_and_accept_never_panic(body in any::<Vec<u8>>(), accept in wild(), mt in wild()) {
        let _ = media::declared_media_type(&body);
        let _ = media::accepts([accept.as_str()], &mt);
    }

    #[test]
    fn configs_parse_or_refuse(text in prop_oneof![
        any::<String>(),
        "(listen|data_dir|storage) = \"[ -~]{0,40}\"",
        "\\[limits\\]\nmax_downloads = [0-9]{1,25}\nqueue_timeout_secs = -?[0-9]{1,25}",
        "\\[\\[upstream\\]\\]\nname = \"[ -~]{0,20}\"\nurl = \"[ -~]{0,40}\"",
    ]) {
        if let Ok(config) = Config::from_toml(&text) {
            let _ = config.validate();
        }
        let _ = Config::from_distribution_yaml(&text);
    }
}
