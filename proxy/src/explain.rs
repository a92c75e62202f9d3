//! `vigil-proxy explain`: what Vigil derives from one request, and why it
//! decides what it does — the same code as the proxy, with no network.
//!
//! Given a request (a raw HTTP/1.1 head, or header flags), the TCP peer,
//! optionally the ClientHello bytes, and a config, it prints the route,
//! which credential was judged (the session key's short prefix, never the
//! value), the client-IP walk hop by hop with the trusted set of each hop,
//! JA4 (with `ja4_r` and `ja4_o`), the device, geo and ASN, the risks with
//! their reasons and points, every fact exactly as a rule condition reads
//! it, each rule's result and the final action. `--json` gives the same
//! as one JSON object; its `facts` table can be pasted into a `rules test`
//! case (`[case.facts]`).
//!
//! The engine is new: the session has no history, so the request is judged
//! as a session's first (login risk and session risk start from nothing).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use vigil_engine::{
    ClientHello, CredentialSource, Engine, Facts, Node, RequestFacts, RequestView, SessionFacts,
    SessionHashKey, TlsFingerprint, Transport, ja4, ja4_o, ja4_r,
};
use vigil_geoip::{GeoIp, GeoPaths};
use vigil_rules::RuleTrace;
use vigil_rules::facts::{FACTS, FactSource, Type};

use crate::config::{Config, HashKeySource};

/// What to explain.
#[derive(Debug, Clone)]
pub struct Input {
    /// The request head: `METHOD target HTTP/1.1`, then header lines.
    pub request: Vec<u8>,
    /// The TCP peer's address.
    pub peer: IpAddr,
    /// The ClientHello as sent on the wire (TLS records); `None`: cleartext.
    pub hello: Option<Vec<u8>>,
    /// The listener it came in on (by name); default the first TLS
    /// listener when a hello is given, else the first.
    pub listener: Option<String>,
    /// The request's time, seconds since the Unix epoch; default now.
    pub now: Option<u64>,
}

/// Why a request could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The request head is not HTTP/1.1.
    #[error("the request is not an HTTP/1.1 head: {0}")]
    Request(String),
    /// The ClientHello could not be read.
    #[error("the ClientHello could not be read: {0}")]
    Hello(String),
    /// No such listener.
    #[error("no listener named {0:?} in the config")]
    Listener(String),
    /// The session hash key or geo databases could not be opened.
    #[error("{0}")]
    Setup(String),
}

/// Most header lines read from a request file.
const MAX_HEADERS: usize = 256;

/// Explains `input` under `config`: the report as JSON.
pub fn explain(config: &Config, input: &Input) -> Result<Value, ExplainError> {
    let (method, target, headers) = parse_request(&input.request)?;
    let listener = match &input.listener {
        Some(name) => config
            .listeners
            .iter()
            .find(|l| &l.name == name)
            .ok_or_else(|| ExplainError::Listener(name.clone()))?,
        // A hello means TLS: the first TLS listener, else the first.
        None => config
            .listeners
            .iter()
            .find(|l| input.hello.is_some() && !l.certificates.is_empty())
            .or_else(|| config.listeners.first())
            .ok_or_else(|| ExplainError::Listener(String::new()))?,
    };
    let tls = !listener.certificates.is_empty();
    let (fingerprint, tls_report) = match &input.hello {
        None => (TlsFingerprint::NONE, Value::Null),
        Some(bytes) => {
            let hello =
                ClientHello::from_records(bytes).map_err(|e| ExplainError::Hello(e.to_string()))?;
            let fingerprint = TlsFingerprint::of_hello(&hello, Transport::Tcp);
            let j = ja4(&hello, Transport::Tcp);
            (
                fingerprint,
                json!({
                    "ja4": j.to_string(),
                    "ja4_stable": fingerprint.ja4_stable.map(|s| s.to_string()),
                    "ja4_r": ja4_r(&hello, Transport::Tcp),
                    "ja4_o": ja4_o(&hello, Transport::Tcp).to_string(),
                }),
            )
        }
    };
    let engine = engine(config)?;
    let host = host_of(&target, &headers);
    let path_only = target.split(['?', '#']).next().unwrap_or_default();
    let selected = crate::routes::select(&config.routes, &host, path_only);
    let (route, path) = match &selected {
        Ok(s) => (
            s.index.and_then(|i| config.routes.get(i)),
            s.path.to_string(),
        ),
        Err(_) => (None, path_only.to_owned()),
    };
    let now = input.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let route_name = route.map_or("", |r| r.name.as_str());
    let view = RequestView {
        peer: input.peer,
        headers: &headers,
        now_secs: now,
        tls: fingerprint,
        facts: RequestFacts {
            method: &method,
            scheme: if tls { "https" } else { "http" },
            host: &host,
            path: &path,
            listener: &listener.name,
            route: route_name,
        },
    };
    let mut report = Map::new();
    report.insert(
        "request".into(),
        json!({
            "method": method, "target": target, "host": host, "path": path,
            "listener": listener.name, "scheme": view.facts.scheme,
        }),
    );
    let Some(route) = route else {
        let why = match &selected {
            Err(e) => e.code().to_owned(),
            Ok(_) => "no route matches".to_owned(),
        };
        report.insert("route".into(), Value::Null);
        report.insert("action".into(), json!(format!("refused: {why}")));
        return Ok(Value::Object(report));
    };
    report.insert(
        "route".into(),
        json!({"name": route.name, "mode": route.mode.as_str()}),
    );
    let rules = config.rules.as_ref();
    let verdict = match engine.decide_with_rules(&view, &route.policy, rules, listener.forwarded) {
        Ok(v) => v,
        Err(e) => {
            report.insert(
                "action".into(),
                json!(format!("not evaluated: {} ({})", e.code(), e)),
            );
            return Ok(Value::Object(report));
        }
    };
    let cookie_names = &config.engine.session.cookie_names;
    report.insert(
        "session".into(),
        match verdict.session {
            None => Value::Null,
            Some(s) => json!({
                "key": s.key.short().to_string(),
                "credential": match s.source {
                    CredentialSource::Cookie(i) => format!(
                        "cookie {}",
                        cookie_names.get(i).map_or("?", String::as_str)
                    ),
                    CredentialSource::Bearer => "bearer token".to_owned(),
                },
                "credentials": verdict.credentials,
            }),
        },
    );
    let trusted = &config.engine.client_ip.trusted;
    let hops: Vec<Value> = verdict
        .client
        .chain
        .as_slice()
        .iter()
        .map(|h| match h.node {
            Node::Ip(ip) => json!({
                "hop": ip.to_string(),
                "trusted_set": trusted.lookup(ip).map(|p| p.as_str().to_owned()),
            }),
            other => json!({"hop": format!("{other:?}").to_lowercase(), "trusted_set": null}),
        })
        .collect();
    report.insert(
        "client".into(),
        json!({
            "peer": verdict.client.peer.to_string(),
            "peer_trusted_set": trusted.lookup(verdict.client.peer).map(|p| p.as_str().to_owned()),
            "chain_source": verdict.client.source.map(|s| format!("{s:?}")),
            "chain": hops,
            "client": verdict.client.addr.to_string(),
            "provider": verdict.client.provider.as_ref().map(|p| p.as_str().to_owned()),
            "egress": verdict.client.egress.map(|e| e.to_string()),
            "flags": format!("{:?}", verdict.client.flags),
            "asn": verdict.network.asn,
            "country": verdict.network.country.map(|c| String::from_utf8_lossy(&c).to_uppercase()),
        }),
    );
    report.insert("tls".into(), tls_report);
    let d = &verdict.device;
    report.insert(
        "device".into(),
        json!({
            "id": d.id.to_string(), "browser": d.browser.as_str(), "major": d.major,
            "os": d.platform.as_str(), "class": d.class.as_str(),
            "language": d.language.as_str(), "tls_source": d.tls.source.as_str(),
        }),
    );
    let risk = |r: &vigil_engine::Risk| {
        json!({
            "level": r.level.as_str(), "score": r.score,
            "reasons": r.reasons.iter().map(|c| json!({"reason": c.reason.code(), "points": c.points})).collect::<Vec<_>>(),
        })
    };
    report.insert(
        "risk".into(),
        json!({
            "overall": risk(&verdict.risk),
            "login": verdict.risks.login.as_ref().map(risk),
            "session": risk(&verdict.risks.session),
            "entity": risk(&verdict.risks.entity),
        }),
    );
    // The facts as rule conditions read them, and each rule's result.
    let default = route.policy.decide(&verdict.risk);
    let facts = Facts {
        request: &view,
        session: verdict.session.map(|_| SessionFacts {
            new: true,
            first_seen: now,
            last_seen: None,
            requests: 1,
            stepped_up_at: None,
        }),
        credentials: verdict.credentials,
        client: &verdict.client,
        network: &verdict.network,
        network_change: verdict.network_change,
        device: &verdict.device,
        risk: &verdict.risk,
        level: route.policy.level(&verdict.risk),
        risks: &verdict.risks,
        user: verdict.user,
        default,
    };
    let source = vigil_rules::facts::Request {
        facts: &facts,
        zone: rules.time_zone(),
    };
    let mut fact_values = Map::new();
    for f in FACTS {
        let v = match f.ty {
            Type::Bool => json!(source.boolean(f.fact)),
            Type::Int => json!(source.integer(f.fact)),
            Type::String => json!(source.text(f.fact).as_str()),
            Type::StringList => {
                let mask = source.reasons();
                json!(
                    vigil_engine::Reason::ALL
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, r)| r.code())
                        .collect::<Vec<_>>()
                )
            }
        };
        fact_values.insert(f.name.into(), v);
    }
    report.insert("facts".into(), Value::Object(fact_values));
    let (_, trace) = rules.trace(&source, &view.facts, default);
    report.insert(
        "rules".into(),
        Value::Array(
            rules
                .rules()
                .iter()
                .zip(trace)
                .map(|(r, t)| {
                    json!({
                        "rule": r.name, "action": r.action_name(), "mode": r.mode_name(),
                        "result": match t {
                            RuleTrace::OutOfScope => "out of scope",
                            RuleTrace::NoMatch => "no match",
                            RuleTrace::Match => "match",
                            RuleTrace::NotReached => "not reached",
                        },
                    })
                })
                .collect(),
        ),
    );
    report.insert("policy_action".into(), json!(default.as_str()));
    report.insert(
        "decided_by".into(),
        json!(
            verdict
                .ruling
                .rule
                .and_then(|i| rules.rule_at(i))
                .map_or("route policy".to_owned(), |r| format!("rule {}", r.name))
        ),
    );
    report.insert(
        "tags".into(),
        json!(rules.tags(verdict.ruling.tags).collect::<Vec<_>>()),
    );
    report.insert("action".into(), json!(verdict.action.as_str()));
    Ok(Value::Object(report))
}

/// The report as text: one section a line group, in the JSON's order.
pub fn render(report: &Value) -> String {
    fn line(out: &mut String, indent: usize, key: &str, v: &Value) {
        let pad = "  ".repeat(indent);
        match v {
            Value::Object(m) => {
                out.push_str(&format!("{pad}{key}:\n"));
                for (k, v) in m {
                    line(out, indent + 1, k, v);
                }
            }
            Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
                out.push_str(&format!("{pad}{key}:\n"));
                for item in items {
                    let parts: Vec<String> = item
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={}", scalar(v)))
                        .collect();
                    out.push_str(&format!("{pad}  - {}\n", parts.join(" ")));
                }
            }
            other => out.push_str(&format!("{pad}{key}: {}\n", scalar(other))),
        }
    }
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        }
    }
    const ORDER: [&str; 13] = [
        "request",
        "route",
        "session",
        "client",
        "tls",
        "device",
        "risk",
        "facts",
        "rules",
        "policy_action",
        "decided_by",
        "tags",
        "action",
    ];
    let mut out = String::new();
    for k in ORDER {
        if let Some(v) = report.get(k) {
            line(&mut out, 0, k, v);
        }
    }
    out
}

fn engine(config: &Config) -> Result<Engine, ExplainError> {
    // The configured key when it exists, so that the session key prefix is
    // the one in the proxy's logs; never created here.
    let key = match &config.hash_key {
        HashKeySource::File(path) if path.exists() => {
            crate::keyfile::load_or_create(path).map_err(|e| ExplainError::Setup(e.to_string()))?
        }
        _ => SessionHashKey::from_bytes(rand::random()),
    };
    let mut engine = Engine::new(config.engine.clone(), key);
    let paths = GeoPaths {
        geo: config.geoip.city.clone(),
        asn: config.geoip.asn.clone(),
    };
    if !paths.is_empty() {
        let geo = GeoIp::open(&paths).map_err(|e| ExplainError::Setup(e.to_string()))?;
        engine = engine.with_geo(Arc::new(geo));
    }
    Ok(engine)
}

/// Method, target and headers of a request head.
fn parse_request(bytes: &[u8]) -> Result<(String, String, HeaderMap), ExplainError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    // A file may end after the last header line without the blank line.
    let mut owned;
    let mut input = bytes;
    if !bytes.windows(4).any(|w| w == b"\r\n\r\n") && !bytes.windows(2).any(|w| w == b"\n\n") {
        owned = bytes.to_vec();
        if !owned.ends_with(b"\n") {
            owned.extend_from_slice(b"\r\n");
        }
        owned.extend_from_slice(b"\r\n");
        input = &owned;
    }
    match req.parse(input) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(ExplainError::Request("incomplete".into())),
        Err(e) => return Err(ExplainError::Request(e.to_string())),
    }
    let method = req.method.unwrap_or("GET").to_owned();
    let target = req.path.unwrap_or("/").to_owned();
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| ExplainError::Request(format!("header {:?}: {e}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|e| ExplainError::Request(format!("header {:?}: {e}", h.name)))?;
        headers.append(name, value);
    }
    Ok((method, target, headers))
}

/// The host as routing reads it: from an absolute target, else `Host`,
/// without port, lower case.
fn host_of(target: &str, headers: &HeaderMap) -> String {
    let from_target = target
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or_default());
    let raw = from_target
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or_default();
    let host = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    host.to_ascii_lowercase()
}

/// Reads a request file, or builds a head from `--header` flags.
pub fn request_bytes(
    file: Option<&Path>,
    method: &str,
    target: &str,
    headers: &[String],
) -> std::io::Result<Vec<u8>> {
    if let Some(path) = file {
        return std::fs::read(path);
    }
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    Ok(head.into_bytes())
}

/// ClientHello bytes from hex (whitespace ignored).
pub fn hello_from_hex(text: &str) -> Result<Vec<u8>, ExplainError> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).map_err(|e| ExplainError::Hello(format!("not hex: {e}")))
}
