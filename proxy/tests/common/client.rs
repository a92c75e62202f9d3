//! Clients: browsers with a session, what the origin says it received, and
//! curl.

use std::net::IpAddr;
use std::process::{Command, Output};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, COOKIE, USER_AGENT};

/// The timeout of every client request in the tests. Reaching it means the
/// proxy hung; it is not a performance limit (10 s was reached by healthy
/// requests on two cores with four builds beside the tests).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Firefox 133 on Linux.
pub(crate) const FIREFOX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
/// Chrome 131 on Linux: another browser family on the same platform.
pub(crate) const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// A reqwest client that follows no redirects, so tests see them, and gives
/// up after [`REQUEST_TIMEOUT`].
pub(crate) fn http_client() -> reqwest::Client {
    client_builder().build().unwrap()
}

fn client_builder() -> reqwest::ClientBuilder {
    tls_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
}

/// A client with a fixed User-Agent and, optionally, a session credential.
#[derive(Debug, Clone)]
pub(crate) struct Browser {
    client: reqwest::Client,
    user_agent: String,
    cookie: Option<String>,
    bearer: Option<String>,
}

/// What the origin's echo endpoint reported receiving.
#[derive(Debug, Clone)]
pub(crate) struct Echo {
    /// `<METHOD> <path?query>`.
    pub(crate) request_line: String,
    /// Every header as received, names lower case, in order.
    pub(crate) headers: Vec<(String, String)>,
}

/// Runs curl with `args` after `--noproxy * -sS --max-time 10`, off the async
/// runtime.
pub(crate) async fn curl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["--noproxy", "*", "-sS", "--max-time"])
            .arg(REQUEST_TIMEOUT.as_secs().to_string())
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

// === impl Browser ===

impl Browser {
    /// A browser with this User-Agent and no session.
    pub(crate) fn new(user_agent: &str) -> Browser {
        Browser {
            client: http_client(),
            user_agent: user_agent.to_owned(),
            cookie: None,
            bearer: None,
        }
    }

    /// [`FIREFOX`].
    pub(crate) fn firefox() -> Browser {
        Browser::new(FIREFOX)
    }

    /// [`CHROME`].
    pub(crate) fn chrome() -> Browser {
        Browser::new(CHROME)
    }

    /// Connects from `ip`, any address of 127.0.0.0/8: the proxy sees
    /// another client address, as when a session moves to another network.
    pub(crate) fn via_address(mut self, ip: IpAddr) -> Browser {
        self.client = client_builder().local_address(ip).build().unwrap();
        self
    }

    /// Sends this `Cookie` header value with every request.
    pub(crate) fn cookie(mut self, cookie: &str) -> Browser {
        self.cookie = Some(cookie.to_owned());
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub(crate) fn bearer(mut self, token: &str) -> Browser {
        self.bearer = Some(token.to_owned());
        self
    }

    /// A GET of `url` with this browser's headers, to add more to.
    pub(crate) fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .get(url)
            .header(USER_AGENT, &self.user_agent)
            .header("accept-language", "en-US,en;q=0.5");
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        if let Some(token) = &self.bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request
    }

    /// GETs `url`.
    pub(crate) async fn get(&self, url: &str) -> reqwest::Response {
        self.request(url).send().await.unwrap()
    }

    /// GETs `url`, expects 200 from the origin's echo endpoint and returns
    /// what it received.
    pub(crate) async fn echo(&self, url: &str) -> Echo {
        let response = self.get(url).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "GET {url}: {body}");
        Echo::parse(&body)
    }
}

// === impl Echo ===

impl Echo {
    /// Parses the echo endpoint's body.
    pub(crate) fn parse(body: &str) -> Echo {
        let mut lines = body.lines();
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(": ").or_else(|| l.split_once(':')))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
            .collect();
        Echo {
            request_line,
            headers,
        }
    }

    /// The value of the only header called `name`; `None` when absent.
    /// Panics if it came more than once.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let values = self.all(name);
        assert!(
            values.len() <= 1,
            "{name} reached the app {} times: {values:?}",
            values.len()
        );
        values.first().copied()
    }

    /// Every value of header `name`, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Names of the headers that start with `prefix` (lower case).
    pub(crate) fn names_starting_with(&self, prefix: &str) -> Vec<&str> {
        self.headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }
}

/// A reqwest client builder with rustls's ring provider installed, the one
/// Pingora uses, so the tests build no second TLS library.
pub(crate) fn tls_client_builder() -> reqwest::ClientBuilder {
    // Installing twice fails harmlessly: another test got there first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
