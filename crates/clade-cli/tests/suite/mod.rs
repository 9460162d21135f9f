mod cli;
mod crash;
mod http;
mod models;
mod support;
mod tools;
mod turns;
