//! Property tests of the wire forms: request bodies survive a round trip through JSON, and the
//! ids streams show map back to outbox positions for their tenant only.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // Test code.

use clade_core::TenantId;
use clade_gateway::api::{CreateGrantParams, ErrorBody, ErrorResponse, EventParams, SourceParams};
use clade_gateway::stream_ids::StreamIds;
use proptest::prelude::*;

fn source() -> impl Strategy<Value = SourceParams> {
    (any::<String>(), any::<String>(), any::<String>())
        .prop_map(|(platform, channel, actor)| SourceParams { platform, channel, actor })
}

fn event() -> impl Strategy<Value = EventParams> {
    (
        proptest::option::of("[a-z0-9][a-z0-9_-]{0,63}"),
        any::<String>(),
        source(),
        proptest::option::of(any::<String>()),
        any::<bool>(),
    )
        .prop_map(|(agent, text, source, idempotency_key, wait)| EventParams {
            agent,
            text,
            source: Some(source),
            session: None,
            idempotency_key,
            wait,
        })
}

/// Serializes `value`, reads it back and serializes that: the two must be the same JSON.
fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> (String, String) {
    let first = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&first).unwrap();
    (first, serde_json::to_string(&back).unwrap())
}

proptest! {
    #[test]
    fn an_event_body_survives_json(params in event()) {
        let (first, again) = round_trip(&params);
        prop_assert_eq!(&first, &again);
        // snake_case on the wire, as documented.
        prop_assert!(first.contains("\"idempotency_key\"") || params.idempotency_key.is_none());
    }

    #[test]
    fn an_error_body_survives_json(code in "[a-z_]{1,32}", message in any::<String>()) {
        let body = ErrorResponse { error: ErrorBody { code, message } };
        let (first, again) = round_trip(&body);
        prop_assert_eq!(first, again);
    }

    #[test]
    fn a_grant_body_with_unknown_fields_is_refused(field in "[a-z]{1,12}") {
        let known = ["agent", "effect", "tool", "resource", "constraints", "parent", "expires_in_secs"];
        prop_assume!(!known.contains(&field.as_str()));
        let body = serde_json::json!({ "agent": "ada", "tool": "shell.exec", field: 1 });
        prop_assert!(serde_json::from_value::<CreateGrantParams>(body).is_err());
    }

    #[test]
    fn a_stream_id_maps_back_to_its_position(
        key in any::<[u8; 32]>(),
        tenant in any::<[u8; 16]>(),
        position in 0i64..i64::MAX,
    ) {
        let ids = StreamIds::new(key);
        let tenant = TenantId::from_bytes(tenant);
        prop_assert_eq!(ids.decode(tenant, ids.encode(tenant, position)), position);
    }

    #[test]
    fn tenants_see_different_ids_for_one_position(
        key in any::<[u8; 32]>(),
        a in any::<[u8; 16]>(),
        b in any::<[u8; 16]>(),
        position in 1i64..1_000_000_000,
    ) {
        prop_assume!(a != b);
        let ids = StreamIds::new(key);
        let (a, b) = (TenantId::from_bytes(a), TenantId::from_bytes(b));
        // Counting another tenant's ids tells nothing: the same position reads differently.
        prop_assert_ne!(ids.encode(a, position), ids.encode(b, position));
        // And an id shown to one tenant is not that position for the other.
        prop_assert_ne!(ids.decode(b, ids.encode(a, position)), position);
    }
}
