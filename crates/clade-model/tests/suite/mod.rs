mod adapters;
mod oauth;
mod router;
mod support;
