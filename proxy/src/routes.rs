//! Which route a request takes: hosts exactly before wildcards before any
//! host, then the longest path prefix, then file order. Runs on every
//! request, over the routes of the config generation the request started
//! with.

use crate::config::Route;

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
        if h.eq_ignore_ascii_case(host) {
            return Some(2);
        }
        if let Some(suffix) = h.strip_prefix("*") {
            // "*.example.com" matches "a.example.com" but not "example.com".
            if host.len() > suffix.len()
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            {
                rank = Some(1);
            }
        }
    }
    rank
}

/// `/api` matches `/api`, `/api/`, `/api/x` and `/api?q`, not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?'])
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
            step_up_url: None,
            app_confirms: false,
            revocation_check: true,
            policy: vigil_engine::Policy::default(),
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
    fn the_first_of_equal_routes_wins_and_none_may_match() {
        let routes = [route("a", &["a.test"], "/"), route("b", &["a.test"], "/")];
        assert_eq!(route_index(&routes, "a.test", "/x"), Some(0));
        assert_eq!(route_index(&routes, "b.test", "/"), None);
    }
}
