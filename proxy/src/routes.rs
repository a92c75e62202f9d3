//! Which route a request takes: hosts exactly before wildcards before any
//! host, then the longest path prefix, then file order. Runs on every
//! request, over the routes of the config generation the request started
//! with.
//!
//! Routes match on the normalised path ([`crate::path::normalise`]), and a
//! request whose path as sent would select another route than its
//! normalised path is refused ([`select`]): which route judges a request is
//! never the client's choice.

use std::borrow::Cow;

use crate::config::Route;
use vigil_rules::{host_matches, prefix_matches};

use crate::path::{PathError, normalise};

/// The route a request takes, and the path it was matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected<'a> {
    /// Index into the routes; `None` when no route matches.
    pub index: Option<usize>,
    /// The normalised path: what routes, rules and logs see.
    pub path: Cow<'a, str>,
}

/// Why a request's path cannot pick a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The path has no single meaning.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The path as sent and the normalised path select different routes:
    /// an app reading the path one way would be judged by the route of
    /// the other.
    #[error("the path as sent and its normalised form select different routes")]
    Ambiguous,
}

impl RouteError {
    /// The stable code: the refusal's `reason`, the metric label.
    pub fn code(self) -> &'static str {
        match self {
            RouteError::Path(e) => e.code(),
            RouteError::Ambiguous => "ambiguous_path",
        }
    }
}

/// The route for `host` (without port, any case) and the request path
/// `raw` (as sent, without query): matched on the normalised path, refused
/// when the path has no single meaning or when `raw` itself would match a
/// different route (or none). Paths that normalise to themselves, the
/// common case, are matched once and not copied.
pub fn select<'a>(routes: &[Route], host: &str, raw: &'a str) -> Result<Selected<'a>, RouteError> {
    let path = normalise(raw)?;
    let index = route_index(routes, host, &path);
    if let Cow::Owned(_) = path
        && route_index(routes, host, raw) != index
    {
        return Err(RouteError::Ambiguous);
    }
    Ok(Selected { index, path })
}

/// The index in `routes` of the route for `host` (without port, any case)
/// and `path`; `None` when no route matches.
pub fn route_index(routes: &[Route], host: &str, path: &str) -> Option<usize> {
    let mut best: Option<(u8, usize, usize)> = None;
    for (i, route) in routes.iter().enumerate() {
        let Some(host_rank) = host_rank(&route.hosts, host) else {
            continue;
        };
        if !prefix_matches(&route.path_prefix, path) {
            continue;
        }
        let rank = (host_rank, route.path_prefix.len(), usize::MAX - i);
        if best.is_none_or(|b| rank > b) {
            best = Some(rank);
        }
    }
    best.map(|(_, _, inv)| usize::MAX - inv)
}

/// 2 for an exact host, 1 for a wildcard, 0 for any host; `None` for no match.
fn host_rank(hosts: &[String], host: &str) -> Option<u8> {
    if hosts.is_empty() {
        return Some(0);
    }
    let mut rank = None;
    for h in hosts {
        if host_matches(h, host) {
            if !h.starts_with('*') {
                return Some(2);
            }
            rank = Some(1);
        }
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FailMode, Mode};

    fn route(name: &str, hosts: &[&str], path_prefix: &str) -> Route {
        Route {
            name: name.to_owned(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            path_prefix: path_prefix.to_owned(),
            upstream: 0,
            mode: Mode::Enforce,
            on_error: FailMode::Closed,
            login_url: None,
            step_up: None,
            app_confirms: false,
            revocation_check: true,
            policy: vigil_engine::Policy::default(),
            stale: None,
            dbsc: crate::dbsc::RouteDbsc::Off,
        }
    }

    #[test]
    fn exact_host_then_wildcard_then_longest_prefix() {
        let routes = [
            route("any", &[], "/"),
            route("api", &[], "/api"),
            route("wild", &["*.example.com"], "/"),
            route("exact", &["app.example.com"], "/"),
        ];
        let name = |host: &str, path: &str| {
            route_index(&routes, host, path).map(|i| routes[i].name.as_str())
        };
        assert_eq!(name("other.org", "/"), Some("any"));
        assert_eq!(name("other.org", "/api/v1"), Some("api"));
        assert_eq!(name("other.org", "/api"), Some("api"));
        assert_eq!(name("other.org", "/api?q=1"), Some("api"));
        assert_eq!(name("other.org", "/apix"), Some("any"));
        assert_eq!(name("x.example.com", "/api"), Some("wild"));
        assert_eq!(name("APP.example.com", "/"), Some("exact"));
        assert_eq!(
            name("example.com", "/"),
            Some("any"),
            "wildcard needs a label"
        );
    }

    #[test]
    fn routes_match_the_normalised_path_and_refuse_a_disagreeing_raw_one() {
        let routes = [
            route("app", &[], "/"),
            route("static", &[], "/static"),
            route("api", &[], "/api"),
        ];
        let name = |path: &str| {
            select(&routes, "a.test", path)
                .map(|s| s.index.map(|i| routes[i].name.as_str()))
                .map_err(RouteError::code)
        };
        // Normalised but choosing the same route: allowed, matched normalised.
        assert_eq!(name("/static//app.js"), Ok(Some("static")));
        assert_eq!(name("/static/./app.js"), Ok(Some("static")));
        assert_eq!(name("/api/a%2Fb"), Ok(Some("api")));
        assert_eq!(name("/echo/../x"), Ok(Some("app")));
        // `\` is not `/` to the prefix, so both readings land on "app".
        assert_eq!(name("/static\\..\\echo"), Ok(Some("app")));
        assert_eq!(
            select(&routes, "a.test", "/static//a.js").map(|s| s.path),
            Ok(Cow::Owned("/static/a.js".to_owned()))
        );
        // The attacks: the prefix of one route, the path of another.
        for attack in [
            "/static/../echo",
            "/static/%2e%2e/echo",
            "/static/..%2fecho",
            "/static/%252e%252e/echo",
            "/static/..;/echo",
            "/echo\\..\\static\\x",
            "/static/..%5cecho",
            "//static/x",
            "/echo/../static/x",
            "/st%61tic/x",
            "/api;x/../static",
        ] {
            assert_eq!(name(attack), Err("ambiguous_path"), "{attack}");
        }
        assert_eq!(name("/static/%00"), Err("nul_in_path"));
    }

    #[test]
    fn the_first_of_equal_routes_wins_and_none_may_match() {
        let routes = [route("a", &["a.test"], "/"), route("b", &["a.test"], "/")];
        assert_eq!(route_index(&routes, "a.test", "/x"), Some(0));
        assert_eq!(route_index(&routes, "b.test", "/"), None);
    }
}
