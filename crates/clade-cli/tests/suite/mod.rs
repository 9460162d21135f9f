mod cli;
mod http;
mod models;
mod support;
