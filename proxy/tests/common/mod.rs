//! Helpers for the integration tests: a real origin, a real proxy process,
//! certificates, clients, a raw socket and a real OpenID provider, all on
//! loopback (STYLE.md 14).
//!
//! Every test starts its own processes on its own ports and in its own
//! temporary directory, so tests run in parallel; every process is stopped by
//! the handle that started it when its helper is dropped.
//!
//! ```rust,ignore
//! let origin = Origin::start();
//! let config = Config::new()
//!     .upstream("app", origin.addr())
//!     .route(Route::new("app", "/", "app").high("revoke"));
//! let proxy = Proxy::start(&config.render()).await;
//! let echo = Browser::firefox().cookie("session=a").echo(&proxy.url("/echo")).await;
//! assert_eq!(echo.header("vigil-risk-level"), Some("low"));
//! let blocked = proxy.metric("vigil_proxy_decisions_total", &[("action", "block")]).await;
//! ```

// Each test crate compiles this module and uses a subset of it.
#![allow(dead_code)]

mod client;
mod config;
mod controller;
mod idp;
mod origin;
mod proxy;
mod raw;
mod relay;
mod tls;

#[allow(unused_imports)] // Each test crate uses a subset.
pub(crate) use client::{
    Browser, CHROME, Echo, FIREFOX, REQUEST_TIMEOUT, curl, http_client, tls_client_builder,
};
#[allow(unused_imports)]
pub(crate) use config::{
    Config, LOGIN_URL, Route, STEP_UP_URL, closed_port, free_addr, held_listener,
};
#[allow(unused_imports)]
pub(crate) use controller::{FLEET_KEY, InProcessController, write_fleet_key};
#[allow(unused_imports)]
pub(crate) use idp::{
    ACR_MFA, ACR_PWD, Account, CLIENT_ID, CLIENT_SECRET, Followed, FormClient, Idp, IdpClient,
    IdpConfig, Page, form_body, json_body, jwt_header, jwt_payload, run_browser, run_script,
};
#[allow(unused_imports)]
pub(crate) use origin::{
    BadOrigin, Misbehaviour, Origin, STREAM_CHUNK_BYTES, STREAM_CHUNKS, WsOrigin,
    expected_stream_body, fnv1a,
};
#[allow(unused_imports)]
pub(crate) use proxy::{DemoAddrs, Metrics, Proxy};
#[allow(unused_imports)]
pub(crate) use raw::{RawResponse, raw_chunked_upload, raw_exchange, raw_get, read_response};
#[allow(unused_imports)]
pub(crate) use relay::Relay;
#[allow(unused_imports)]
pub(crate) use tls::{Ca, Leaf};
