//! `vigil-proxy`: the Pingora server that puts Vigil's engine in front of web
//! apps. The binary in `main.rs` only parses the command line and calls in.

pub mod admin;
pub mod cidrs;
pub mod config;
pub mod demo;
pub mod events;
pub mod feedback;
pub mod forwarding;
pub mod geo;
pub mod hello;
pub mod keyfile;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;
