mod adapters;
mod fixtures;
mod oauth;
mod router;
mod support;
