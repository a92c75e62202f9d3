//! What the proxy under test needs to judge a corpus as `vigil-eval` does:
//! its IP plan as a geo database, its egress networks as a trusted proxy
//! set, loopback trusted as the balancer the generator plays, and a
//! config with the evaluation's policy (low → allow, medium → step-up,
//! high → block) and the rotating binding on, as `vigil-eval` runs it.
//!
//! `vigil-load prepare --out DIR` writes `geo.mmdb`, `zscaler.txt` and
//! `vigil-proxy.toml` (listeners and upstream filled in from its options);
//! the integration test starts the proxy from exactly these files.

use std::fmt::Write as _;
use std::path::Path;

use vigil_eval::evaluate::geo_database;
use vigil_eval::scenario::{NetworkKind, NetworkPlan};

/// Where the prepared proxy listens and forwards.
#[derive(Debug, Clone)]
pub struct ProxySetup {
    /// Cleartext listener, `ip:port`.
    pub listen: String,
    /// TLS listener `ip:port` with its certificate and key, if any.
    pub tls: Option<(String, String, String)>,
    /// The origin, `ip:port`.
    pub origin: String,
    /// Admin listener, `ip:port`.
    pub admin: String,
    /// Worker threads per listener.
    pub threads: usize,
    /// Path of the login requests (answered by the app).
    pub step_up_url: String,
    /// `[binding] rotate_after_seconds` (1 to 86,400; 300 is the
    /// engine's default); the grace is 30 s or this, if shorter.
    pub rotate_after_seconds: u32,
}

/// Writes `geo.mmdb`, `zscaler.txt` and `vigil-proxy.toml` into `dir`.
pub fn write(dir: &Path, plan: &NetworkPlan, setup: &ProxySetup) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    geo_database(plan)
        .write(&dir.join("geo.mmdb"))
        .map_err(|e| format!("geo.mmdb: {e}"))?;
    let mut egress = String::from("# Zscaler-style egress networks of the corpus\n");
    for n in plan
        .networks
        .iter()
        .filter(|n| n.kind == NetworkKind::ZscalerEgress)
    {
        let _ = writeln!(egress, "{}", n.cidr);
    }
    std::fs::write(dir.join("zscaler.txt"), egress).map_err(|e| format!("zscaler.txt: {e}"))?;
    std::fs::write(dir.join("vigil-proxy.toml"), config(dir, setup))
        .map_err(|e| format!("vigil-proxy.toml: {e}"))?;
    Ok(())
}

/// The proxy's config for a load run (paths relative to `dir`).
pub fn config(dir: &Path, s: &ProxySetup) -> String {
    let mut c = format!(
        r#"# Written by `vigil-load prepare`: the proxy as vigil-eval judges the corpus.
[server]
threads = {threads}
state_dir = "{state}"
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1

[log]
level = "warn"

[admin]
listen = "{admin}"

[session]
cookies = ["session"]
user_header = "vigil-user"
# Every lap of a long run brings new sessions: keep room for them.
max_sessions = 2000000

# The rotating companion cookie (docs/bound-sessions.md): vigil-load keeps
# a cookie jar per client, so a thief replaying a copied jar is caught once
# both holders come back across a rotation. The companion is `Secure`:
# play it over the TLS listener (or the cleartext one as a balancer that
# ended TLS).
[binding]
enabled = true
rotate_after_seconds = {rotate}
grace_seconds = {grace}

# The generator connects from loopback: it is the balancer in front of
# Vigil, and writes the simulated client in X-Forwarded-For.
[[trusted_proxies]]
name = "balancer"
cidrs = ["127.0.0.0/8", "::1/128"]

[[trusted_proxies]]
name = "zscaler"
file = "zscaler.txt"

[geoip]
city = "geo.mmdb"
asn = "geo.mmdb"

[fingerprint]
upstream_ja4_header = "x-load-ja4"
upstream_trusted = ["balancer"]

[[listeners]]
name = "plain"
listen = "{listen}"
h2c = true
forwarded_headers = ["x-forwarded-for"]
max_connections = 100000
"#,
        threads = s.threads.max(1),
        state = dir.join("state").display(),
        admin = s.admin,
        listen = s.listen,
        rotate = s.rotate_after_seconds.clamp(1, 86_400),
        grace = s.rotate_after_seconds.clamp(1, 30),
    );
    if let Some((listen, cert, key)) = &s.tls {
        let _ = write!(
            c,
            r#"
[[listeners]]
name = "tls"
listen = "{listen}"
http2 = true
forwarded_headers = ["x-forwarded-for"]
max_connections = 100000
misdirected = "allow"
[[listeners.certificates]]
cert = "{cert}"
key = "{key}"
server_names = ["localhost"]
"#
        );
    }
    let _ = write!(
        c,
        r#"
[[upstreams]]
name = "origin"
addresses = ["{origin}"]
[upstreams.health]
interval_seconds = 0

# Hosts pick the mode, so one proxy serves every comparison target.
[[routes]]
name = "enforce"
upstream = "origin"
mode = "enforce"
step_up_url = "{step_up}"
policy = {{ low = "allow", medium = "step_up", high = "block" }}

[[routes]]
name = "off"
hosts = ["off.test"]
upstream = "origin"
mode = "off"
"#,
        origin = s.origin,
        step_up = s.step_up_url,
    );
    c
}
