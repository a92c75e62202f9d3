//! `vigil-proxy`: the Pingora server that puts Vigil's engine in front of web
//! apps. The binary in `main.rs` only parses the command line and calls in.

pub mod admin;
pub mod cidrs;
pub mod config;
pub mod conn_limits;
pub mod dbsc;
pub mod demo;
pub mod events;
pub mod explain;
pub mod file_watch;
pub mod fleet_sync;
pub mod forwarding;
pub mod generation;
pub mod geoip_cli;
pub mod hello;
pub mod keyfile;
pub mod logging;
pub mod metrics;
pub mod open_requests;
pub mod operator;
pub mod outbound;
pub mod path;
pub mod periodic;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod routes;
pub mod rules_bundle;
pub mod rules_cli;
pub mod server;
pub mod signal;
pub mod snapshot;
pub mod stepup;
pub mod sweeper;
pub mod tls;
pub mod upstream;
