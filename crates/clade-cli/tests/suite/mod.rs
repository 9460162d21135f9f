mod cli;
mod http;
mod support;
