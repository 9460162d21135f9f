mod agents;
mod failures;
mod harness;
mod secrets;
mod tenants_tokens;
mod usage;
