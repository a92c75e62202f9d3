use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:8080"

[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"
"#;

fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    Config::parse(text, Path::new("/etc/vigil/proxy.toml")).map_err(|e| match e {
        ConfigError::Invalid { problems, .. } => problems,
        ConfigError::Read { .. } => unreachable!(),
    })
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.engine.session.cookie_names, vec!["session"]);
    assert!(c.engine.session.bearer);
    assert_eq!(c.routes[0].policy, Policy::default());
    assert_eq!(c.routes[0].mode, Mode::Enforce);
    assert_eq!(c.routes[0].on_error, FailMode::Closed);
    assert_eq!(c.routes[0].path_prefix, "/");
    assert!(!c.server.work_stealing);
    assert_eq!(
        c.hash_key,
        HashKeySource::File("/var/lib/vigil/session-hash.key".into())
    );
    assert_eq!(c.upstreams[0].health.kind, HealthKind::Tcp);
}

#[test]
fn the_example_config_is_valid_apart_from_its_file_paths() {
    let text = include_str!("../../../examples/vigil-proxy.toml");
    let problems = parse(text).unwrap_err();
    // The example points at files that exist only on a real host.
    assert!(
        problems.iter().all(|p| {
            p.key.starts_with("listeners[1].certificates") || p.key == "trusted_proxies[1].file"
        }),
        "{problems:#?}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[server]
threads = "many"
colour = "blue"

[log]
format = "xml"

[risk]
device_changed = 300

[[listeners]]
name = "http"
listen = "not-an-address"
http2 = true

[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000", "localhost"]

[[routes]]
name = "app"
upstream = "missing"
mode = "loud"
[routes.policy]
high = "deny"
"#;
    let problems = parse(text).unwrap_err();
    let keys = keys(&problems);
    for expected in [
        "server.threads",
        "server.colour",
        "log.format",
        "risk.device_changed",
        "listeners[0].listen",
        "listeners[0].http2",
        "upstreams[0].addresses[1]",
        "routes[0].upstream",
        "routes[0].mode",
        "routes[0].policy.high",
    ] {
        assert!(
            keys.contains(&expected),
            "{expected} missing from {problems:#?}"
        );
    }
    let unknown = problems.iter().find(|p| p.key == "server.colour").unwrap();
    assert!(unknown.message.contains("unknown key"), "{unknown:?}");
    assert!(
        unknown.message.contains("threads"),
        "lists the known keys: {unknown:?}"
    );
}

#[test]
fn problems_render_with_file_and_key() {
    let err = Config::parse("[server]\nthreads = 0\n", Path::new("proxy.toml")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("proxy.toml: server.threads: 0 is out of range"),
        "{text}"
    );
    assert!(
        text.contains("proxy.toml: listeners: at least one"),
        "{text}"
    );
}

#[test]
fn syntax_errors_name_the_file() {
    let err = Config::parse("[server\n", Path::new("bad.toml")).unwrap_err();
    assert!(
        err.to_string().starts_with("bad.toml: not valid TOML"),
        "{err}"
    );
}

#[test]
fn policies_that_redirect_need_their_urls() {
    let text = format!("{MINIMAL}[routes.policy]\nmedium = \"step_up\"\nhigh = \"revoke\"\n");
    let problems = parse(&text).unwrap_err();
    let keys = keys(&problems);
    assert!(keys.contains(&"routes[0].step_up_url"));
    assert!(keys.contains(&"routes[0].login_url"));
}

#[test]
fn duplicate_names_and_addresses_are_problems() {
    let text = r#"
[[listeners]]
name = "a"
listen = "127.0.0.1:8080"
[[listeners]]
name = "a"
listen = "127.0.0.1:8080"
[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000"]
[[routes]]
name = "app"
upstream = "app"
"#;
    let problems = parse(text).unwrap_err();
    assert!(keys(&problems).contains(&"listeners[1].name"));
    assert!(keys(&problems).contains(&"listeners[1].listen"));
}

#[test]
fn missing_certificate_files_are_reported_with_their_key() {
    let text = format!(
        "{MINIMAL}[[listeners]]\nname = \"tls\"\nlisten = \"127.0.0.1:8443\"\n\
         [[listeners.certificates]]\ncert = \"nope.pem\"\nkey = \"nope.key\"\n"
    );
    let problems = parse(&text).unwrap_err();
    let p = problems
        .iter()
        .find(|p| p.key == "listeners[1].certificates[0].cert")
        .unwrap();
    assert!(
        p.message.contains("/etc/vigil/nope.pem"),
        "relative to the file: {p:?}"
    );
}

#[test]
fn trusted_sets_come_inline_and_from_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zscaler.txt"),
        "# egress\n185.46.212.0/22\n2a03:eec0::/32\n",
    )
    .unwrap();
    let text = format!(
        "{MINIMAL}[[trusted_proxies]]\nname = \"lb\"\ncidrs = [\"10.0.0.0/8\", \"192.0.2.1\"]\n\
         [[trusted_proxies]]\nname = \"zscaler\"\nfile = \"zscaler.txt\"\n\
         [client_ip]\nstrategy = \"walk\"\n"
    );
    let c = Config::parse(&text, &dir.path().join("proxy.toml")).unwrap();
    assert_eq!(c.trusted_proxies.len(), 2);
    assert_eq!(c.trusted_proxies[0].cidrs.len(), 2);
    assert_eq!(c.trusted_proxies[1].file_cidrs.len(), 2);
    assert_eq!(c.client_ip.strategy, ChainStrategy::Walk);
}

#[test]
fn forwarding_and_trust_problems_are_reported() {
    let text = r#"
[client_ip]
strategy = "hops"
max_hops = 0

[[trusted_proxies]]
name = "cdn"
cidrs = ["203.0.113.0/24", "nonsense"]
[[trusted_proxies]]
name = "empty"
[[trusted_proxies]]
name = "list"
file = "/nonexistent/list.txt"

[[listeners]]
name = "http"
listen = "127.0.0.1:8080"
forwarded_headers = ["x-forwarded-for", "x-real-ip"]

[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"
"#;
    let problems = parse(text).unwrap_err();
    let keys = keys(&problems);
    for expected in [
        "client_ip.trusted_hops",
        "client_ip.max_hops",
        "trusted_proxies[0].cidrs[1]",
        "trusted_proxies[1].cidrs",
        "trusted_proxies[2].file",
        "listeners[0].forwarded_headers[1]",
    ] {
        assert!(
            keys.contains(&expected),
            "{expected} missing from {problems:#?}"
        );
    }
}

#[test]
fn believing_forwarding_headers_needs_a_trusted_set() {
    let text = MINIMAL.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nforwarded_headers = [\"forwarded\"]",
    );
    let problems = parse(&text).unwrap_err();
    assert_eq!(keys(&problems), ["listeners[0].forwarded_headers"]);
}

#[test]
fn risk_engine_settings_are_checked_together() {
    let text = r#"
[session]
user_header = "not a header"
snapshot_interval_seconds = 0

[risk]
max_kmh = 20
concurrent_window_seconds = 0
max_users = 0

[risk.model]
device_weight = 50
llr_cap = 0
familiar_after = 0

[[listeners]]
name = "http"
listen = "127.0.0.1:8080"

[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"
[routes.policy]
medium_at = 70
high_at = 40
"#;
    let problems = parse(text).unwrap_err();
    let keys = keys(&problems);
    for expected in [
        "session.user_header",
        "session.snapshot_interval_seconds",
        "risk.max_kmh",
        "risk.concurrent_window_seconds",
        "risk.max_users",
        "risk.model.device_weight",
        "risk.model.llr_cap",
        "risk.model.familiar_after",
        "routes[0].policy.medium_at",
    ] {
        assert!(
            keys.contains(&expected),
            "{expected} missing from {problems:#?}"
        );
    }
}

#[test]
fn a_route_can_set_its_own_thresholds_and_the_user_header_can_be_off() {
    let text = r#"
[session]
user_header = ""

[[listeners]]
name = "http"
listen = "127.0.0.1:8080"

[[upstreams]]
name = "app"
addresses = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"
[routes.policy]
medium_at = 20
high_at = 50
"#;
    let config = parse(text).unwrap();
    assert_eq!(config.user_header, None);
    assert_eq!(
        config.routes[0].policy.thresholds,
        Some(vigil_engine::Thresholds {
            medium_at: 20,
            high_at: 50
        })
    );
    assert_eq!(
        config.engine.score.session_idle_timeout,
        std::time::Duration::from_secs(30 * 86_400)
    );
}

#[test]
fn upstream_timeouts_are_bounded() {
    let upstream = |extra: &str| {
        format!(
            "[[listeners]]\nname = \"h\"\nlisten = \"127.0.0.1:1\"\n\
             [[upstreams]]\nname = \"u\"\naddresses = [\"127.0.0.1:2\"]\n{extra}\n\
             [[routes]]\nname = \"r\"\nupstream = \"u\"\n"
        )
    };
    let c = parse(&upstream(
        "connect_timeout_ms = 60000\nread_timeout_ms = 3600000",
    ))
    .unwrap();
    assert_eq!(c.upstreams[0].connect_timeout, Duration::from_secs(60));
    assert_eq!(c.upstreams[0].read_timeout, Duration::from_secs(3600));

    let problems = parse(&upstream("connect_timeout_ms = 60001\nread_timeout_ms = 0")).unwrap_err();
    assert_eq!(
        keys(&problems),
        [
            "upstreams[0].connect_timeout_ms",
            "upstreams[0].read_timeout_ms"
        ]
    );
    assert!(
        problems[0].message.contains("expected 1 to 60000"),
        "{problems:?}"
    );
    let problems = parse(&upstream("read_timeout_ms = 3600001")).unwrap_err();
    assert!(
        problems[0].message.contains("expected 1 to 3600000"),
        "{problems:?}"
    );
}

#[test]
fn connection_limits_default_and_every_out_of_range_one_is_reported() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listeners[0].limits, ListenerLimits::default());
    assert_eq!(c.listeners[0].limits.max_connections, 10_000);
    assert_eq!(
        c.listeners[0].limits.header_timeout,
        Duration::from_secs(10)
    );

    let text = MINIMAL.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nmax_connections = 0\nheader_timeout_ms = 10\n\
         keepalive_idle_seconds = 0\n\
         h2_max_concurrent_streams = 5000\nh2_max_header_list_bytes = 100\n\
         h2_max_pending_resets = 0",
    );
    let problems = parse(&text).unwrap_err();
    assert_eq!(
        keys(&problems),
        [
            "listeners[0].max_connections",
            "listeners[0].header_timeout_ms",
            "listeners[0].keepalive_idle_seconds",
            "listeners[0].h2_max_concurrent_streams",
            "listeners[0].h2_max_header_list_bytes",
            "listeners[0].h2_max_pending_resets",
        ]
    );
    assert!(
        problems[1].message.contains("expected 100 to 300000"),
        "{problems:#?}"
    );
    assert!(
        problems[2]
            .message
            .contains("0 is out of range; expected 1 to 3600"),
        "{problems:#?}"
    );
    assert_eq!(c.listeners[0].limits.keepalive_idle_seconds, 60);
}

#[test]
fn routes_of_different_modes_on_one_upstream_are_a_warning_not_an_error() {
    let text = format!(
        "{MINIMAL}\n[[routes]]\nname = \"static\"\nupstream = \"app\"\npath_prefix = \"/static\"\nmode = \"off\"\n"
    );
    let c = parse(&text).unwrap();
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("upstreams \"app\"")
            && warnings[0].contains("\"app\" (mode enforce, any host, path /)")
            && warnings[0].contains("\"static\" (mode off, any host, path /static)"),
        "{}",
        warnings[0]
    );
    assert!(parse(MINIMAL).unwrap().warnings().is_empty());
}

#[test]
fn misdirected_is_a_tls_listener_choice() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listeners[0].misdirected, Misdirected::Refuse);
    let text = MINIMAL.replace(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nmisdirected = \"maybe\"\n",
    );
    let problems = parse(&text).unwrap_err();
    assert_eq!(
        keys(&problems),
        ["listeners[0].misdirected", "listeners[0].misdirected"],
        "{problems:#?}"
    );
    assert!(
        problems[0]
            .message
            .contains("expected \"refuse\" or \"allow\"")
    );
    assert!(problems[1].message.contains("only used on a TLS listener"));
}

#[test]
fn oidc_step_up_is_checked_whole() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let good = format!(
        r#"
[oidc]
issuer = "https://idp.example.com"
client_id = "vigil"
client_secret_file = {secret:?}
user_claim = "email"
{MINIMAL}step_up = "oidc"
[routes.policy]
high = "step_up"
"#
    );
    let c = parse(&good).unwrap();
    let oidc = c.oidc.as_deref().unwrap();
    // Read from its file, trimmed, and never printed.
    assert_eq!(oidc.client_secret.as_deref(), Some("s3cret"));
    assert!(!format!("{c:?}").contains("s3cret"));
    assert_eq!(oidc.user_claim, UserClaim::Email);
    assert_eq!(oidc.pending, Duration::from_secs(600));
    assert_eq!(
        c.routes[0].step_up,
        Some(StepUpVia::Oidc {
            callback_path: DEFAULT_CALLBACK_PATH.to_owned(),
            it_was_me: false,
        })
    );
    let offered =
        parse(&good.replace("step_up = \"oidc\"", "step_up = \"oidc\"\nit_was_me = true")).unwrap();
    assert_eq!(
        offered.routes[0].step_up,
        Some(StepUpVia::Oidc {
            callback_path: DEFAULT_CALLBACK_PATH.to_owned(),
            it_was_me: true,
        })
    );

    // Every problem at once: cleartext issuer off loopback, a missing
    // secret file, an unknown claim, a route stepping up both ways with a
    // callback path outside its prefix, a callback path with a query.
    let bad = good
        .replace("https://idp.example.com", "http://idp.example.com")
        .replace(&format!("{secret:?}"), "\"/nonexistent/secret\"")
        .replace("user_claim = \"email\"", "user_claim = \"name\"")
        .replace(
            "step_up = \"oidc\"",
            "step_up = \"oidc\"\nstep_up_url = \"/x\"\npath_prefix = \"/app\"\ncallback_path = \"/cb\"",
        )
        .replace(
            "[routes.policy]",
            "[[routes]]\nname = \"b\"\nupstream = \"app\"\nstep_up = \"oidc\"\ncallback_path = \"/cb?x=1\"\n[routes.policy]",
        );
    let problems = parse(&bad).unwrap_err();
    let found = keys(&problems);
    for key in [
        "oidc.issuer",
        "oidc.client_secret_file",
        "oidc.user_claim",
        "routes[0].step_up_url",
        "routes[0].callback_path",
        "routes[1].callback_path",
    ] {
        assert!(found.contains(&key), "{key} not in {problems:#?}");
    }

    // `step_up = "oidc"` needs the section; a callback path needs oidc.
    let no_section = good[good.find("[[listeners]]").unwrap()..].to_owned();
    let problems = parse(&no_section).unwrap_err();
    assert_eq!(keys(&problems), ["routes[0].step_up"], "{problems:#?}");
    let stray = MINIMAL.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\ncallback_path = \"/cb\"\n",
    );
    assert_eq!(
        keys(&parse(&stray).unwrap_err()),
        ["routes[0].callback_path"]
    );
    // The "it was me" link is answered by a step-up at the provider: a
    // route without one cannot offer it (or not at all).
    let stray = MINIMAL.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nit_was_me = true\n",
    );
    assert_eq!(keys(&parse(&stray).unwrap_err()), ["routes[0].it_was_me"]);
    let off = MINIMAL.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nit_was_me = false\n",
    );
    assert!(parse(&off).is_ok());
}

#[test]
fn controller_is_checked_whole() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "  node-t0ken\n").unwrap();
    let good = format!(
        "[controller]\nurl = \"https://ctl.example.com/\"\ntoken_file = {token:?}\n{MINIMAL}"
    );
    let c = parse(&good).unwrap();
    let ctl = c.controller.as_deref().unwrap();
    // The trailing slash is dropped; the token is read, trimmed, never printed.
    assert_eq!(ctl.url, "https://ctl.example.com");
    assert_eq!(ctl.token.as_deref(), Some("node-t0ken"));
    assert_eq!(ctl.events_queue, 10_000);
    assert!(!format!("{c:?}").contains("node-t0ken"));
    assert!(parse(MINIMAL).unwrap().controller.is_none());
    // Cleartext to a loopback controller is allowed.
    let local = good.replace("https://ctl.example.com/", "http://127.0.0.1:7000");
    assert_eq!(
        parse(&local).unwrap().controller.unwrap().url,
        "http://127.0.0.1:7000"
    );

    // Every problem at once: cleartext off loopback, an empty token file,
    // a queue out of bounds, an unknown key.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, " \n").unwrap();
    let bad = good
        .replace("https://ctl.example.com/", "http://ctl.example.com")
        .replace(&format!("{token:?}"), &format!("{empty:?}"))
        .replace(
            "[controller]\n",
            "[controller]\nevents_queue = 0\nresync = true\n",
        );
    let problems = parse(&bad).unwrap_err();
    assert_eq!(
        keys(&problems),
        [
            "controller.url",
            "controller.token_file",
            "controller.events_queue",
            "controller.resync"
        ],
        "{problems:#?}"
    );
    // The section needs its URL and its token.
    let problems = parse(&format!("[controller]\n{MINIMAL}")).unwrap_err();
    assert_eq!(
        keys(&problems),
        ["controller.url", "controller.token_file"],
        "{problems:#?}"
    );
    let spaced = dir.path().join("spaced");
    std::fs::write(&spaced, "two words").unwrap();
    let problems = parse(&good.replace(&format!("{token:?}"), &format!("{spaced:?}"))).unwrap_err();
    assert_eq!(keys(&problems), ["controller.token_file"]);
}

#[test]
fn staleness_is_per_route_and_needs_a_controller() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "node-t0ken\n").unwrap();
    let controller =
        format!("[controller]\nurl = \"http://127.0.0.1:7000\"\ntoken_file = {token:?}\n");
    let routes = "[[routes]]\nname = \"closed\"\nupstream = \"app\"\npath_prefix = \"/c\"\nstale_after = 30\non_stale = \"fail_closed\"\n\
                  [[routes]]\nname = \"open\"\nupstream = \"app\"\npath_prefix = \"/o\"\nstale_after = 60\n";
    let c = parse(&format!("{controller}{MINIMAL}{routes}")).unwrap();
    assert_eq!(c.routes[0].stale, None, "off by default");
    assert_eq!(
        c.routes[1].stale,
        Some(Stale {
            after: 30,
            on_stale: OnStale::FailClosed
        })
    );
    assert_eq!(
        c.routes[2].stale,
        Some(Stale {
            after: 60,
            on_stale: OnStale::FailOpen
        })
    );
    assert_eq!(c.controller.unwrap().events_queue_bytes, 64 << 20);

    // Without a [controller] there is nothing to grow stale: every route
    // that asks is told, with the rest of the file's problems.
    let problems = parse(&format!("{MINIMAL}{routes}")).unwrap_err();
    assert_eq!(
        keys(&problems),
        ["routes[1].stale_after", "routes[2].stale_after"],
        "{problems:#?}"
    );
    assert!(
        problems[0].message.contains("[controller]"),
        "{problems:#?}"
    );

    // A bad choice, a bound, on_stale alone, a queue too small in bytes.
    let bad = "[[routes]]\nname = \"a\"\nupstream = \"app\"\npath_prefix = \"/a\"\nstale_after = 0\non_stale = \"maybe\"\n\
               [[routes]]\nname = \"b\"\nupstream = \"app\"\npath_prefix = \"/b\"\non_stale = \"fail_closed\"\n";
    let problems = parse(&format!(
        "{}events_queue_bytes = 1\n{MINIMAL}{bad}",
        controller
    ))
    .unwrap_err();
    assert_eq!(
        keys(&problems),
        [
            "routes[1].on_stale",
            "routes[1].stale_after",
            "routes[2].on_stale",
            "controller.events_queue_bytes"
        ],
        "{problems:#?}"
    );
}

#[test]
fn rules_from_the_controller_need_one_and_the_bundle_in_force_must_compile() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "node-t0ken\n").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let head = format!(
        "[server]\nstate_dir = {state:?}\n[controller]\nurl = \"http://127.0.0.1:7000\"\ntoken_file = {token:?}\n\
         [rules]\nsource = \"controller\"\n"
    );
    // No bundle yet: the files' rules (none here).
    let c = parse(&format!("{head}{MINIMAL}")).unwrap();
    assert_eq!(c.rules_source, RulesSource::Controller);
    assert_eq!(c.rules_bundle, None);
    assert!(c.rules.is_empty());
    assert_eq!(parse(MINIMAL).unwrap().rules_source, RulesSource::Files);

    // The bundle in force in the state directory replaces them.
    let store = |text: &str| {
        crate::rules_bundle::write(
            &state,
            &crate::rules_bundle::StoredBundle {
                version: 4,
                sha256: crate::rules_bundle::sha256_hex(text),
                created_at: 1,
                text: text.to_owned(),
            },
        )
        .unwrap();
    };
    store("[[rule]]\nname = \"block-admin\"\npath_prefixes = [\"/admin\"]\naction = \"block\"\n");
    let c = parse(&format!("{head}{MINIMAL}")).unwrap();
    assert_eq!(c.rules_bundle.as_ref().map(|b| b.version), Some(4));
    assert_eq!(c.rules.rules()[0].name, "block-admin");
    // A bundle this config cannot compile (a route it lacks) is a problem
    // of the config: a reload that would drop it is refused.
    store("[[rule]]\nname = \"block-ops\"\nroutes = [\"ops\"]\naction = \"block\"\n");
    let problems = parse(&format!("{head}{MINIMAL}")).unwrap_err();
    assert_eq!(keys(&problems), ["rules.source"], "{problems:#?}");
    assert!(
        problems[0]
            .message
            .contains("bundle.toml:1: rule \"block-ops\": route \"ops\" does not exist"),
        "{problems:#?}"
    );
    let with_ops = format!(
        "{head}{MINIMAL}[[routes]]\nname = \"ops\"\nupstream = \"app\"\npath_prefix = \"/ops\"\n"
    );
    assert_eq!(parse(&with_ops).unwrap().rules.rules()[0].name, "block-ops");
    // A damaged file too.
    std::fs::write(
        state.join(crate::rules_bundle::FILE_NAME),
        "{\"version\":1}",
    )
    .unwrap();
    assert_eq!(
        keys(&parse(&format!("{head}{MINIMAL}")).unwrap_err()),
        ["rules.source"]
    );

    // From the controller without one, from nowhere, an unknown key.
    for bad in [
        "[rules]\nsource = \"controller\"\n",
        "[rules]\nsource = \"peer\"\n",
        "[rules]\nbundle = \"x\"\n",
    ] {
        let problems = parse(&format!("{bad}{MINIMAL}")).unwrap_err();
        assert_eq!(keys(&problems).len(), 1, "{bad}: {problems:#?}");
        assert!(keys(&problems)[0].starts_with("rules."), "{problems:#?}");
    }

    // Switching the source needs a restart: the running rules stay.
    std::fs::remove_file(state.join(crate::rules_bundle::FILE_NAME)).unwrap();
    let files = parse(MINIMAL).unwrap();
    let merged = merge(&files, parse(&with_ops).unwrap());
    assert!(merged.restart.contains(&"rules.source".to_owned()));
    assert_eq!(merged.config.rules_source, RulesSource::Files);
    assert!(merged.config.rules.is_empty());
}

#[test]
fn a_rotation_names_the_retiring_key_and_pins_user_keys() {
    let c = parse(&format!(
        "{MINIMAL}\n[session]\nhash_key_file = \"k2.key\"\nprevious_hash_key_file = \"k1.key\"\n\
         user_key_file = \"/secrets/k1.key\"\n"
    ))
    .unwrap();
    assert_eq!(c.hash_key, HashKeySource::File("/etc/vigil/k2.key".into()));
    assert_eq!(
        c.key_rotation,
        KeyRotation {
            previous: Some("/etc/vigil/k1.key".into()),
            user: Some("/secrets/k1.key".into()),
        }
    );
    assert_eq!(parse(MINIMAL).unwrap().key_rotation, KeyRotation::default());
}

#[test]
fn a_rotation_that_would_re_key_users_or_retire_nothing_is_refused() {
    // The previous key is the current file, and user keys would move with
    // the session key: both reported at once.
    let problems = parse(&format!(
        "{MINIMAL}\n[session]\nhash_key_file = \"k.key\"\nprevious_hash_key_file = \"/etc/vigil/k.key\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        keys(&problems),
        ["session.previous_hash_key_file", "session.user_key_file"]
    );
    assert!(
        problems[1]
            .message
            .contains("orphaning every user's history")
    );
}

#[test]
fn changing_the_key_pair_waits_for_a_restart() {
    let running = parse(MINIMAL).unwrap();
    let next = parse(&format!(
        "{MINIMAL}\n[session]\nhash_key_file = \"/var/lib/vigil/session-hash.key\"\n\
         previous_hash_key_file = \"old.key\"\nuser_key_file = \"old.key\"\n"
    ))
    .unwrap();
    let merged = restart::merge(&running, next);
    assert_eq!(
        merged.restart,
        ["session.previous_hash_key_file", "session.user_key_file"]
    );
    assert_eq!(merged.config.key_rotation, KeyRotation::default());
}

#[test]
fn dbsc_is_per_route_and_every_bad_setting_is_named() {
    let routes = "[[routes]]\nname = \"bound\"\nupstream = \"app\"\npath_prefix = \"/b\"\ndbsc = \"require\"\n";
    let c = parse(&format!(
        "[dbsc]\ncookie_lifetime_seconds = 60\nexclude_paths = [\"/static/\"]\n{MINIMAL}{routes}"
    ))
    .unwrap();
    assert_eq!(
        c.routes[0].dbsc,
        crate::dbsc::RouteDbsc::Off,
        "off by default"
    );
    assert_eq!(c.routes[1].dbsc, crate::dbsc::RouteDbsc::Require);
    assert_eq!(c.dbsc.cookie_lifetime, 60);
    // The challenge handed out with a cookie outlives it.
    assert_eq!(c.dbsc.challenge_lifetime, 120);
    assert_eq!(c.dbsc.path, "/.vigil/dbsc");
    assert_eq!(c.dbsc.exclude_paths, ["/static/"]);

    // A bad choice, DBSC on an off route, a bad path, cookie name, bound,
    // exclusion and an unknown key: all at once.
    let bad = "[[routes]]\nname = \"a\"\nupstream = \"app\"\npath_prefix = \"/a\"\ndbsc = \"maybe\"\n\
               [[routes]]\nname = \"b\"\nupstream = \"app\"\npath_prefix = \"/b\"\nmode = \"off\"\ndbsc = \"offer\"\n";
    let problems = parse(&format!(
        "[dbsc]\npath = \"/x/\"\ncookie_name = \"a b\"\ncookie_lifetime_seconds = 0\nexclude_paths = [\"static\", \"/\"]\nlifetime = 1\n{MINIMAL}{bad}"
    ))
    .unwrap_err();
    assert_eq!(
        keys(&problems),
        [
            "routes[1].dbsc",
            "routes[2].dbsc",
            "dbsc.path",
            "dbsc.cookie_name",
            "dbsc.cookie_lifetime_seconds",
            "dbsc.exclude_paths[0]",
            "dbsc.exclude_paths[1]",
            "dbsc.lifetime"
        ],
        "{problems:#?}"
    );
    // A custom name keeps the __Host- prefix.
    let problems = parse(&format!(
        "[dbsc]\ncookie_name = \"vigil-dbsc\"\n{MINIMAL}{routes}"
    ))
    .unwrap_err();
    assert_eq!(keys(&problems), ["dbsc.cookie_name"], "{problems:#?}");

    // What a node cut off from the controller does: `serve` by default;
    // `refuse_registration` only where there is a controller to be cut
    // off from; anything else named.
    assert_eq!(c.dbsc.when_cut_off, crate::dbsc::CutOff::Serve);
    let problems = parse(&format!(
        "[dbsc]\nwhen_cut_off = \"refuse_registration\"\n{MINIMAL}{routes}"
    ))
    .unwrap_err();
    assert_eq!(keys(&problems), ["dbsc.when_cut_off"], "{problems:#?}");
    assert!(
        problems[0].message.contains("only with a [controller]"),
        "{problems:#?}"
    );
    let problems = parse(&format!(
        "[dbsc]\nwhen_cut_off = \"refuse\"\n{MINIMAL}{routes}"
    ))
    .unwrap_err();
    assert_eq!(keys(&problems), ["dbsc.when_cut_off"], "{problems:#?}");
    assert_eq!(
        problems[0].message,
        "\"refuse\" is not a choice; expected \"serve\" or \"refuse_registration\""
    );
}
