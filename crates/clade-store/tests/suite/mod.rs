mod agents;
mod failures;
mod harness;
mod pages;
mod secrets;
mod tenants_tokens;
mod usage;
