//! Proxy configs for tests, written in the format of
//! `examples/vigil-proxy.toml`, and loopback ports to put in them.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

use super::tls::Leaf;

/// `login_url` of every [`Route`].
pub(crate) const LOGIN_URL: &str = "/login";
/// `step_up_url` of every [`Route`].
pub(crate) const STEP_UP_URL: &str = "/login?step_up=1";

/// A whole config: `[server]` with one thread, `[admin]` and a cleartext
/// listener `http` on free ports, plus whatever is added. The proxy harness
/// fills in `server.state_dir`.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    http: SocketAddr,
    admin: SocketAddr,
    admin_extra: String,
    server_extra: String,
    h2c: bool,
    /// Extra lines of the `http` listener's table.
    http_extra: String,
    believe: Vec<String>,
    sections: String,
    listeners: String,
    upstreams: String,
    routes: String,
}

/// One `[[routes]]` table. Defaults: mode `enforce`, on_error `closed`, any
/// host, policy low/medium `allow`, high `block`, login and step-up URLs
/// [`LOGIN_URL`] and [`STEP_UP_URL`].
#[derive(Debug, Clone)]
pub(crate) struct Route {
    name: String,
    path_prefix: String,
    upstream: String,
    hosts: Vec<String>,
    mode: String,
    on_error: String,
    low: String,
    medium: String,
    high: String,
    app_confirms: bool,
    /// Steps up at `[oidc]`'s provider instead of `step_up_url`.
    oidc: bool,
    /// Offers the "it was me" link on block pages (with `oidc`).
    it_was_me: bool,
    /// `stale_after` and `on_stale`, when set.
    stale: Option<(u64, String)>,
    /// `dbsc`, when set.
    dbsc: Option<String>,
}

/// The ports this test process has handed out, for [`free_addr`] and
/// [`held_listener`] alike.
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Binds a loopback port that no other caller in this test process has
/// been given (see [`free_addr`]), and records it.
fn bind_unique() -> TcpListener {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return listener;
        }
    }
}

/// A loopback address with a port that was free a moment ago and that no
/// other caller in this test process has been given.
///
/// The proxy binds it later, so another process could take it in between;
/// the kernel hands out ephemeral ports in turn, which makes that rare.
/// Within the process nothing can: every listener a test binds for itself
/// comes from [`held_listener`], which skips the ports given here. (A bare
/// `bind("127.0.0.1:0")` could be handed a port given here and not yet
/// bound by its proxy; that proxy then failed to bind while its test,
/// connecting to the port, talked to the other test's listener.)
pub(crate) fn free_addr() -> SocketAddr {
    bind_unique().local_addr().unwrap()
}

/// A listening loopback socket on a port no other caller in this test
/// process has been given, held (non-blocking, ready for tokio) for as long
/// as the caller keeps it: for the origins, relays and controllers tests
/// run in-process.
pub(crate) fn held_listener() -> TcpListener {
    let listener = bind_unique();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// An address nothing listens on: connections to it are refused.
pub(crate) fn closed_port() -> SocketAddr {
    free_addr()
}

// === impl Config ===

impl Config {
    /// The minimal parts every test proxy has.
    pub(crate) fn new() -> Config {
        Config {
            http: free_addr(),
            admin: free_addr(),
            admin_extra: String::new(),
            server_extra: String::new(),
            h2c: false,
            http_extra: String::new(),
            believe: Vec::new(),
            sections: String::new(),
            listeners: String::new(),
            upstreams: String::new(),
            routes: String::new(),
        }
    }

    /// The cleartext listener's address.
    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Believes these forwarding headers on the `http` listener.
    pub(crate) fn believe(mut self, headers: &[&str]) -> Config {
        self.believe = headers.iter().map(|h| (*h).to_owned()).collect();
        self
    }

    /// Accepts cleartext HTTP/2 with prior knowledge on the `http` listener.
    pub(crate) fn h2c(mut self) -> Config {
        self.h2c = true;
        self
    }

    /// Adds `key = value` lines to the `http` listener's table, such as
    /// `max_connections = 5`.
    pub(crate) fn http_listener(mut self, lines: &str) -> Config {
        self.http_extra.push_str(lines);
        self.http_extra.push('\n');
        self
    }

    /// Adds a TLS listener `name` on `addr` with `certs`, the first being the
    /// default.
    pub(crate) fn tls_listener(
        mut self,
        name: &str,
        addr: SocketAddr,
        http2: bool,
        certs: &[&Leaf],
    ) -> Config {
        write!(
            self.listeners,
            "\n[[listeners]]\nname = {name:?}\nlisten = \"{addr}\"\nhttp2 = {http2}\n"
        )
        .unwrap();
        for leaf in certs {
            write!(
                self.listeners,
                "[[listeners.certificates]]\ncert = {:?}\nkey = {:?}\nserver_names = {:?}\n",
                leaf.cert_path().display().to_string(),
                leaf.key_path().display().to_string(),
                leaf.names(),
            )
            .unwrap();
        }
        self
    }

    /// Adds an upstream `name` with one address and default settings.
    pub(crate) fn upstream(mut self, name: &str, addr: SocketAddr) -> Config {
        write!(
            self.upstreams,
            "\n[[upstreams]]\nname = {name:?}\naddresses = [\"{addr}\"]\n"
        )
        .unwrap();
        self
    }

    /// Adds a route.
    pub(crate) fn route(mut self, route: Route) -> Config {
        self.routes.push_str(&route.render());
        self
    }

    /// Adds top-level tables written out in TOML, such as `[limits]`.
    pub(crate) fn section(mut self, toml: &str) -> Config {
        self.sections.push('\n');
        self.sections.push_str(toml);
        self.sections.push('\n');
        self
    }

    /// Keeps state in `dir` (the harness gives each proxy its own otherwise)
    /// and shuts down at once on SIGTERM.
    pub(crate) fn state_dir(mut self, dir: &std::path::Path) -> Config {
        self.server_extra = format!(
            "state_dir = {:?}\ngrace_period_seconds = 0\ngraceful_shutdown_timeout_seconds = 1\n",
            dir.display().to_string()
        );
        self
    }

    /// Moves the cleartext listener `http` to `addr`.
    pub(crate) fn http_at(mut self, addr: SocketAddr) -> Config {
        self.http = addr;
        self
    }

    /// Adds lines to `[server]`, such as `watch_config = true`.
    pub(crate) fn server(mut self, lines: &str) -> Config {
        self.server_extra.push_str(lines);
        self.server_extra.push('\n');
        self
    }

    /// Sets `[admin] token_file`, turning the operator calls on.
    pub(crate) fn admin_token_file(mut self, path: &std::path::Path) -> Config {
        self.admin_extra = format!("token_file = {:?}\n", path.display().to_string());
        self
    }

    /// The config file's text.
    pub(crate) fn render(&self) -> String {
        format!(
            "[server]\nthreads = 1\n{server_extra}\n[admin]\nlisten = \"{admin}\"\n{admin_extra}{sections}\n\
             [[listeners]]\nname = \"http\"\nlisten = \"{http}\"\nh2c = {h2c}\n\
             forwarded_headers = {believe:?}\n{http_extra}{listeners}{upstreams}{routes}",
            http_extra = self.http_extra,
            believe = self.believe,
            admin = self.admin,
            admin_extra = self.admin_extra,
            server_extra = self.server_extra,
            http = self.http,
            h2c = self.h2c,
            sections = self.sections,
            listeners = self.listeners,
            upstreams = self.upstreams,
            routes = self.routes,
        )
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Route ===

impl Route {
    /// A route `name` for requests under `path_prefix`, to `upstream`.
    pub(crate) fn new(name: &str, path_prefix: &str, upstream: &str) -> Route {
        Route {
            name: name.to_owned(),
            path_prefix: path_prefix.to_owned(),
            upstream: upstream.to_owned(),
            hosts: Vec::new(),
            mode: "enforce".to_owned(),
            on_error: "closed".to_owned(),
            low: "allow".to_owned(),
            medium: "allow".to_owned(),
            high: "block".to_owned(),
            app_confirms: false,
            oidc: false,
            it_was_me: false,
            stale: None,
            dbsc: None,
        }
    }

    /// `dbsc = "offer"` or `"require"` (`off` when never called).
    pub(crate) fn dbsc(mut self, dbsc: &str) -> Route {
        self.dbsc = Some(dbsc.to_owned());
        self
    }

    /// `stale_after = after` and `on_stale = on_stale` (needs a
    /// `[controller]`).
    pub(crate) fn stale(mut self, after: u64, on_stale: &str) -> Route {
        self.stale = Some((after, on_stale.to_owned()));
        self
    }

    /// Steps up at the `[oidc]` provider (`step_up = "oidc"`), with the
    /// default callback path.
    pub(crate) fn oidc(mut self) -> Route {
        self.oidc = true;
        self
    }

    /// Block pages offer the "it was me" link (`it_was_me = true`);
    /// steps up at `[oidc]`.
    pub(crate) fn it_was_me(mut self) -> Route {
        self.oidc = true;
        self.it_was_me = true;
        self
    }

    /// The app on this route is trusted to confirm a passed step-up.
    pub(crate) fn app_confirms(mut self) -> Route {
        self.app_confirms = true;
        self
    }

    /// Serves only these hosts.
    pub(crate) fn hosts(mut self, hosts: &[&str]) -> Route {
        self.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        self
    }

    /// `enforce`, `monitor` or `off`.
    pub(crate) fn mode(mut self, mode: &str) -> Route {
        self.mode = mode.to_owned();
        self
    }

    /// `closed` or `open`.
    pub(crate) fn on_error(mut self, on_error: &str) -> Route {
        self.on_error = on_error.to_owned();
        self
    }

    /// The action at high risk.
    pub(crate) fn high(mut self, action: &str) -> Route {
        self.high = action.to_owned();
        self
    }

    /// The action at low risk (every request without a session).
    pub(crate) fn low(mut self, action: &str) -> Route {
        self.low = action.to_owned();
        self
    }

    /// The action at medium risk.
    pub(crate) fn medium(mut self, action: &str) -> Route {
        self.medium = action.to_owned();
        self
    }

    fn render(&self) -> String {
        let mut out = format!(
            "\n[[routes]]\nname = {:?}\npath_prefix = {:?}\nupstream = {:?}\n",
            self.name, self.path_prefix, self.upstream
        );
        if !self.hosts.is_empty() {
            writeln!(out, "hosts = {:?}", self.hosts).unwrap();
        }
        if let Some(dbsc) = &self.dbsc {
            writeln!(out, "dbsc = {dbsc:?}").unwrap();
        }
        if let Some((after, on_stale)) = &self.stale {
            writeln!(out, "stale_after = {after}\non_stale = {on_stale:?}").unwrap();
        }
        let step_up = if self.oidc {
            format!("step_up = \"oidc\"\nit_was_me = {}", self.it_was_me)
        } else {
            format!("step_up_url = {STEP_UP_URL:?}")
        };
        write!(
            out,
            "mode = {:?}\non_error = {:?}\nlogin_url = {LOGIN_URL:?}\n{step_up}\n\
             app_confirms = {}\n[routes.policy]\nlow = {:?}\nmedium = {:?}\nhigh = {:?}\n",
            self.mode, self.on_error, self.app_confirms, self.low, self.medium, self.high
        )
        .unwrap();
        out
    }
}
