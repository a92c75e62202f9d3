//! What a reload can change, and what only a restart can.
//!
//! A reloaded config is applied to new requests while the process keeps its
//! sockets, its session store and its session hash key. Settings that would
//! need new sockets (listener addresses, the listener set, the admin
//! listener), that would re-key every session (the hash key, the session
//! cookie names) or that size a store are held at their running values and
//! reported, so an operator learns that the file and the process disagree
//! until the next restart.

use super::Config;

/// A reloaded config as it can be applied, and what of it waits for a
/// restart.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The new config with every restart-only setting put back to the
    /// running one.
    pub config: Config,
    /// The dotted keys whose new values need a restart, in file order.
    pub restart: Vec<String>,
}

/// Merges `next`, a validated config read on reload, into `running`.
pub fn merge(running: &Config, mut next: Config) -> Merged {
    let mut restart = Vec::new();
    // Keeps the running value of a field that differs, naming its key.
    macro_rules! hold {
        ($key:expr, $($field:tt)+) => {
            if next.$($field)+ != running.$($field)+ {
                restart.push(String::from($key));
                next.$($field)+ = running.$($field)+.clone();
            }
        };
    }
    hold!("server.threads", server.threads);
    hold!("server.work_stealing", server.work_stealing);
    hold!("server.grace_period_seconds", server.grace_period);
    hold!(
        "server.graceful_shutdown_timeout_seconds",
        server.graceful_shutdown_timeout
    );
    hold!("server.state_dir", server.state_dir);
    hold!("server.file_check_seconds", server.file_check);
    hold!("log.format", log.format);
    // Pingora's buffer is capped from it when the listeners start.
    hold!("limits.max_header_bytes", max_header_bytes);
    hold!("admin.listen", admin.listen);

    // The session key: changing how it is derived orphans every session.
    hold!("session.hash_key_file", hash_key);
    hold!("session.previous_hash_key_file", key_rotation.previous);
    hold!("session.user_key_file", key_rotation.user);
    // A session's key is derived from its cookie's name.
    hold!("session.cookies", engine.session.cookie_names);
    if next.snapshot_every.is_some() != running.snapshot_every.is_some() {
        restart.push("session.snapshot".to_owned());
    }
    hold!("session.snapshot_interval_seconds", snapshot_every);
    // Store sizes and lifetimes.
    hold!("session.max_sessions", engine.score.max_sessions);
    hold!(
        "session.idle_timeout_seconds",
        engine.score.session_idle_timeout
    );
    hold!(
        "session.revocation_ttl_seconds",
        engine.score.revocation_ttl
    );
    // The binding's store and keys are built with the engine.
    hold!("binding", engine.binding);
    hold!("risk.max_users", engine.score.max_users);
    hold!(
        "risk.user_idle_timeout_seconds",
        engine.score.user_idle_timeout
    );

    // The bundle applier is started with the node; until a restart the
    // rules stay as they run.
    if next.rules_source != running.rules_source {
        restart.push("rules.source".to_owned());
        next.rules_source = running.rules_source;
        next.rules = running.rules.clone();
        next.rules_bundle = running.rules_bundle.clone();
    }

    hold!("geoip.city", geoip.city);
    hold!("geoip.asn", geoip.asn);

    // The ClientHello capture is wired into the listeners at start.
    hold!("fingerprint.capture", fingerprint.capture);
    hold!(
        "fingerprint.max_hello_bytes",
        fingerprint.settings.max_hello_bytes
    );
    hold!(
        "fingerprint.hello_timeout_ms",
        fingerprint.settings.hello_timeout
    );
    hold!(
        "fingerprint.max_connections",
        fingerprint.settings.max_connections
    );
    hold!(
        "fingerprint.connection_idle_timeout_seconds",
        fingerprint.settings.idle_timeout
    );

    // The sync stream and the event poster are started with the process.
    hold!("controller", controller);

    merge_listeners(running, &mut next, &mut restart);
    Merged {
        config: next,
        restart,
    }
}

/// Listeners are sockets: only their certificates reload. A listener set
/// that differs in names or order keeps the running one whole.
fn merge_listeners(running: &Config, next: &mut Config, restart: &mut Vec<String>) {
    let names = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>()
    };
    if names(running) != names(next) {
        restart.push("listeners".to_owned());
        next.listeners = running.listeners.clone();
        return;
    }
    for (i, (old, new)) in running
        .listeners
        .iter()
        .zip(&mut next.listeners)
        .enumerate()
    {
        let mut hold = |key: &str, differs: bool| {
            if differs {
                restart.push(format!("listeners[{i}].{key}"));
            }
            differs
        };
        if hold("listen", new.listen != old.listen) {
            new.listen = old.listen;
        }
        if hold("h2c", new.h2c != old.h2c) {
            new.h2c = old.h2c;
        }
        if hold("http2", new.http2 != old.http2) {
            new.http2 = old.http2;
        }
        if hold(
            "tls_required_for_tls_sessions",
            new.tls_required_for_tls_sessions != old.tls_required_for_tls_sessions,
        ) {
            new.tls_required_for_tls_sessions = old.tls_required_for_tls_sessions;
        }
        if hold("forwarded_headers", new.forwarded != old.forwarded) {
            new.forwarded = old.forwarded;
        }
        // The connection limits are built into the listener's accept path
        // and its HTTP/2 settings.
        let (o, n) = (old.limits, new.limits);
        for (key, differs) in [
            ("max_connections", n.max_connections != o.max_connections),
            ("header_timeout_ms", n.header_timeout != o.header_timeout),
            (
                "keepalive_idle_seconds",
                n.keepalive_idle_seconds != o.keepalive_idle_seconds,
            ),
            (
                "h2_max_concurrent_streams",
                n.h2_max_concurrent_streams != o.h2_max_concurrent_streams,
            ),
            (
                "h2_max_header_list_bytes",
                n.h2_max_header_list_bytes != o.h2_max_header_list_bytes,
            ),
            (
                "h2_max_pending_resets",
                n.h2_max_pending_resets != o.h2_max_pending_resets,
            ),
        ] {
            hold(key, differs);
        }
        new.limits = old.limits;
        // Read into the listener's application when it starts, like the
        // forwarding headers.
        if hold("misdirected", new.misdirected != old.misdirected) {
            new.misdirected = old.misdirected;
        }
        // Adding the first certificate or removing the last turns a
        // cleartext socket into a TLS one or back.
        let flips = new.certificates.is_empty() != old.certificates.is_empty();
        if hold("certificates", flips) {
            new.certificates.clone_from(&old.certificates);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str, listen: &str, mode: &str) -> Config {
        let text = format!(
            "[server]\nstate_dir = \"/tmp/vigil-test\"\n{extra}\n\
             [[listeners]]\nname = \"http\"\nlisten = \"{listen}\"\n\
             [[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:1\"]\n\
             [[routes]]\nname = \"r\"\nupstream = \"u\"\nmode = \"{mode}\"\n"
        );
        Config::parse(&text, Path::new("/etc/vigil/vigil-proxy.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_policy_change_needs_no_restart() {
        let running = config("", "127.0.0.1:8080", "enforce");
        let merged = merge(&running, config("", "127.0.0.1:8080", "monitor"));
        assert_eq!(merged.restart, Vec::<String>::new());
        assert_eq!(merged.config.routes[0].mode, super::super::Mode::Monitor);
    }

    #[test]
    fn a_new_listen_address_is_held_and_reported_and_the_rest_applies() {
        let running = config("", "127.0.0.1:8080", "enforce");
        let merged = merge(&running, config("", "127.0.0.1:9090", "monitor"));
        assert_eq!(merged.restart, ["listeners[0].listen"]);
        assert_eq!(merged.config.listeners, running.listeners);
        assert_eq!(merged.config.routes[0].mode, super::super::Mode::Monitor);
    }

    #[test]
    fn session_keying_and_store_sizes_are_held() {
        let running = config("", "127.0.0.1:8080", "enforce");
        let next = config(
            "[session]\ncookies = [\"sid\"]\nmax_sessions = 10\nhash_key_file = \"other.key\"\n\
             [limits]\nmax_cookies = 50\n\
             [risk]\nmax_users = 5\nmedium_at = 20\n[log]\nlevel = \"debug\"",
            "127.0.0.1:8080",
            "enforce",
        );
        let merged = merge(&running, next);
        assert_eq!(
            merged.restart,
            [
                "session.hash_key_file",
                "session.cookies",
                "session.max_sessions",
                "risk.max_users",
            ]
        );
        assert_eq!(
            merged.config.engine.session.cookie_names,
            running.engine.session.cookie_names
        );
        assert_eq!(
            merged.config.engine.session.limits.max_cookies, 50,
            "a limit applies"
        );
        assert_eq!(merged.config.hash_key, running.hash_key);
        assert_eq!(merged.config.engine.score.max_sessions, 1_000_000);
        assert_eq!(merged.config.engine.score.medium_at, 20, "a weight applies");
        assert_eq!(merged.config.log.level, "debug", "the log level applies");
    }

    #[test]
    fn a_changed_listener_set_keeps_the_running_listeners() {
        let running = config("", "127.0.0.1:8080", "enforce");
        let mut next = config("", "127.0.0.1:8080", "enforce");
        next.listeners[0].name = "other".to_owned();
        let merged = merge(&running, next);
        assert_eq!(merged.restart, ["listeners"]);
        assert_eq!(merged.config.listeners, running.listeners);
    }

    #[test]
    fn connection_limits_and_the_header_cap_are_held_until_a_restart() {
        let running = config("", "127.0.0.1:8080", "enforce");
        let mut next = config(
            "[limits]\nmax_header_bytes = 8192",
            "127.0.0.1:8080",
            "monitor",
        );
        next.listeners[0].limits.max_connections = 5;
        next.listeners[0].limits.header_timeout = std::time::Duration::from_secs(1);
        next.listeners[0].limits.h2_max_pending_resets = 3;
        let merged = merge(&running, next);
        assert_eq!(
            merged.restart,
            [
                "limits.max_header_bytes",
                "listeners[0].max_connections",
                "listeners[0].header_timeout_ms",
                "listeners[0].h2_max_pending_resets",
            ]
        );
        assert_eq!(merged.config.listeners, running.listeners);
        assert_eq!(merged.config.max_header_bytes, running.max_header_bytes);
        assert_eq!(merged.config.routes[0].mode, super::super::Mode::Monitor);
    }

    #[test]
    fn a_changed_misdirected_choice_waits_for_a_restart() {
        let running = config("", "127.0.0.1:8080", "enforce");
        let mut next = config("", "127.0.0.1:8080", "enforce");
        next.listeners[0].misdirected = crate::config::Misdirected::Allow;
        let merged = merge(&running, next);
        assert_eq!(merged.restart, ["listeners[0].misdirected"]);
        assert_eq!(merged.config.listeners, running.listeners);
    }
}
