mod agents;
mod failures;
mod harness;
mod outbox;
mod pages;
mod secrets;
mod tenants_tokens;
mod usage;
