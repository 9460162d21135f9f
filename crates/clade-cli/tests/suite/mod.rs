mod cli;
mod crash;
mod http;
mod models;
mod sessions;
mod support;
mod tools;
mod turns;
