//! Client IP: who is really on the other end.
//!
//! For now the client is the TCP peer. Walking `Forwarded`/`X-Forwarded-For`
//! through trusted proxy sets replaces the body of [`ClientIpStage::resolve`]
//! and adds facts to [`ClientIp`]; the stages around it do not change.

use std::net::IpAddr;

use crate::request::RequestView;

/// The client address the rest of the pipeline judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp {
    /// The derived client address.
    pub addr: IpAddr,
}

/// The client IP stage.
#[derive(Debug, Clone, Default)]
pub struct ClientIpStage {
    _private: (),
}

impl ClientIpStage {
    /// Derives the client address of a request.
    pub fn resolve(&self, request: &RequestView<'_>) -> ClientIp {
        ClientIp { addr: request.peer }
    }
}
