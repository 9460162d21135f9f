//! OpenTelemetry traces of Clade's turns: each finished turn becomes spans following the
//! GenAI semantic conventions ([`spans`]), sent to a collector over OTLP, `http/protobuf` or
//! `grpc` ([`export`]), or written as OTLP/JSON lines ([`wire::to_json`]) for
//! `clade trace export`.
//!
//! Owns: the span model and OTLP's wire messages. Depends on the store (a turn's record) and
//! the runtime (its journal's typed view, the outbox's sink); it must not depend on the
//! gateway or the CLI, which configure and start it.

pub mod export;
pub mod spans;
pub mod wire;

pub use export::{Error, Exporter, Options, Protocol, SUBSCRIBER};
pub use spans::{Content, Owner, trace_of, turn_spans};

/// The resource spans are reported under: the service, its version and this node.
pub fn resource(service_name: &str, instance: &str) -> wire::Resource {
    wire::Resource {
        attributes: vec![
            wire::KeyValue::string("service.name", service_name),
            wire::KeyValue::string("service.version", env!("CARGO_PKG_VERSION")),
            wire::KeyValue::string("service.instance.id", instance),
        ],
    }
}
