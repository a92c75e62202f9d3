//! The dashboard for security teams (`docs/dashboard.md`): server-side
//! HTML pages from compile-time checked templates (askama, every value
//! HTML-escaped unless a template says otherwise, which none does), one
//! stylesheet and one small script served from the binary, and forms that
//! post back to the controller.
//!
//! Every page needs a dashboard session ([`session`]), opened with the
//! admin token (role `responder`), a viewer token (`viewer`) or the
//! pinned admin certificate. Every POST is checked for its origin
//! (`Origin`, `Sec-Fetch-Site`) and, once signed in, for the session's
//! CSRF token; only a responder's actions are carried out. Every answer,
//! errors included, comes from one renderer ([`PageError`]) with the same
//! security headers ([`secure`]).

pub mod config;
pub mod fleet;
pub mod oidc;
pub mod session;

mod actions;
mod chart;
mod feedback;
mod pages;
mod rules;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use sha2::Digest as _;

pub use config::DashboardConfig;
use session::{Identity, Role, Session};

use crate::api::{ApiError, App, now_secs};
use crate::store::StoreError;
use crate::tls::Peer;

/// The Content-Security-Policy of every dashboard answer: nothing but the
/// controller's own script and stylesheet, no inline script or style, no
/// framing, forms only back to the controller.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard's stylesheet.
const CSS: &str = include_str!("../../assets/dashboard.css");

/// The dashboard's script: enhancements only; every page reads and every
/// form works without it.
const JS: &str = include_str!("../../assets/dashboard.js");

/// The chart library the script draws charts with: uPlot (MIT), the copy
/// the workspace vendors at the version its lockfile pins
/// (`vendor/uplot/`, checked by `loadtests/load/tests/assets.rs`). Loaded
/// only by pages with charts; a browser without script reads the SVG or
/// the table the server puts in each chart's figure (`docs/dashboard.md`,
/// Technology).
const UPLOT_JS: &str = include_str!("../../../vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../../vendor/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../../../vendor/uplot/LICENSE");

/// Every static file: its path under `/dashboard/static/`, type and body.
const STATIC: [(&str, &str, &str); 5] = [
    ("dashboard.css", "text/css; charset=utf-8", CSS),
    ("dashboard.js", "text/javascript; charset=utf-8", JS),
    ("uplot.css", "text/css; charset=utf-8", UPLOT_CSS),
    ("uplot.js", "text/javascript; charset=utf-8", UPLOT_JS),
    (
        "uplot-LICENSE.txt",
        "text/plain; charset=utf-8",
        UPLOT_LICENSE,
    ),
];

/// Largest form body: a few short fields.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Longest query string a page takes.
const MAX_QUERY_BYTES: usize = 2 * 1024;

/// The cookie's name over HTTPS: `__Host-` makes browsers refuse it
/// unless it is `Secure`, for the whole host, and set by it.
const COOKIE_TLS: &str = "__Host-vigil-dashboard";

/// The cookie's name over plain HTTP (loopback, tests).
const COOKIE_PLAIN: &str = "vigil-dashboard";

/// The pre-login cookie of a sign-in through the OpenID provider, over
/// HTTPS and over plain HTTP: `SameSite=Lax`, as the provider's redirect
/// back is a navigation from another site.
const PRELOGIN_TLS: &str = "__Host-vigil-dashboard-oidc";
const PRELOGIN_PLAIN: &str = "vigil-dashboard-oidc";

/// The dashboard's routes, none when `[dashboard] enabled = false`.
pub fn router(app: &Arc<App>) -> Router<Arc<App>> {
    if !app.config.dashboard.enabled {
        return Router::new();
    }
    Router::new()
        .route("/dashboard", get(pages::overview))
        .route("/dashboard/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/oidc/start", get(oidc_start))
        .route(config::CALLBACK_PATH, get(oidc_callback))
        .route("/dashboard/user", get(pages::user))
        .route("/dashboard/sessions", get(pages::sessions))
        .route("/dashboard/timeline", get(pages::timeline))
        .route("/dashboard/detections", get(pages::detections))
        .route("/dashboard/detection", get(pages::detection))
        .route("/dashboard/search", get(pages::search))
        .route("/dashboard/audit", get(pages::audit))
        .route("/dashboard/precision", get(feedback::precision))
        .route("/dashboard/rules", get(rules::rules))
        .route("/dashboard/confirm", get(actions::confirm_page))
        .route("/dashboard/act", post(actions::act))
        .route("/dashboard/static/{file}", get(static_file))
        .layer(axum::middleware::map_response(secure))
}

/// Adds the dashboard's security headers to every answer; a page (any
/// answer without its own `Cache-Control`) is not stored by any cache.
async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `GET /dashboard/static/FILE`: one of [`STATIC`], or `404`. Cached by
/// the browser alone for five minutes: a new build's files are picked up
/// soon after an upgrade.
async fn static_file(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match STATIC.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "private, max-age=300"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

// === errors ===

/// Why a dashboard request was not answered with its page: each becomes
/// one status and one page, in [`PageError::into_response`].
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No live dashboard session: to the sign-in page.
    #[error("sign in first")]
    SignIn,
    /// The credential given at sign-in is not one the dashboard knows.
    #[error("that token or certificate does not sign in to this dashboard")]
    BadCredential,
    /// Too many failed sign-ins from this client, or from everyone.
    #[error("too many failed sign-ins; wait a minute and try again")]
    TooMany,
    /// A POST from another site, or without this session's CSRF token.
    #[error("{0}")]
    Forgery(&'static str),
    /// A viewer tried to act.
    #[error("only a responder may do this; you are signed in as a viewer")]
    NotResponder,
    /// Nothing of that name or id.
    #[error("{0}")]
    NotFound(String),
    /// A malformed query or form.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error("the store failed; try again")]
    Store,
    /// An admin call the dashboard shares failed.
    #[error("{}", .0.message())]
    Api(ApiError),
    /// The identity provider did not vouch for the operator.
    #[error("{0}")]
    NotSignedIn(String),
    /// The identity provider vouched for an operator whose claims map to
    /// no role.
    #[error("your identity has no role on this dashboard; ask to be given one")]
    NoRole,
    /// Something the sign-in needs cannot be reached.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The page could not be rendered, or no random session id drawn.
    #[error("the page could not be made; try again")]
    Internal,
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store failed");
        PageError::Store
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError::Api(e)
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        tracing::warn!(error = %e, "dashboard page not rendered");
        PageError::Internal
    }
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            PageError::SignIn => StatusCode::SEE_OTHER,
            PageError::BadCredential | PageError::NotSignedIn(_) => StatusCode::UNAUTHORIZED,
            PageError::NoRole => StatusCode::FORBIDDEN,
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::TooMany => StatusCode::TOO_MANY_REQUESTS,
            PageError::Forgery(_) | PageError::NotResponder => StatusCode::FORBIDDEN,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Store => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Api(e) => e.status(),
            PageError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage {
    status: u16,
    title: String,
    message: String,
    signed_in: bool,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let PageError::SignIn = self {
            return Redirect::to("/dashboard/login").into_response();
        }
        let status = self.status();
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            message: self.to_string(),
            signed_in: !matches!(
                self,
                PageError::BadCredential
                    | PageError::TooMany
                    | PageError::NotSignedIn(_)
                    | PageError::NoRole
                    | PageError::Unavailable(_)
            ),
        };
        match page.render() {
            Ok(html) => (status, html_type(), html).into_response(),
            Err(_) => (status, self.to_string()).into_response(),
        }
    }
}

fn html_type() -> [(header::HeaderName, &'static str); 1] {
    [(header::CONTENT_TYPE, "text/html; charset=utf-8")]
}

/// A rendered page, as an answer.
pub(crate) fn page(t: &impl Template) -> Result<Response, PageError> {
    Ok((html_type(), t.render()?).into_response())
}

// === requests ===

/// The value of the cookie `name` in the request, when it is there exactly
/// once: two (one tossed in by a sibling host) open nothing.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((n, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if n == name {
                if found.is_some() {
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found
}

fn cookie_name(app: &App) -> &'static str {
    if app.config.tls.is_some() {
        COOKIE_TLS
    } else {
        COOKIE_PLAIN
    }
}

/// The signed-in operator of a request: the session and its cookie value.
pub(crate) struct Operator {
    pub(crate) session: Session,
    id: String,
}

impl Operator {
    /// What every page shows of who is signed in.
    pub(crate) fn nav(&self) -> view::Nav {
        view::Nav {
            identity: self.session.identity.label(),
            role: self.session.role.as_str(),
            responder: self.session.role == Role::Responder,
            csrf: self.session.csrf_token(),
        }
    }
}

/// The request's live dashboard session.
pub(crate) fn operator(app: &App, headers: &HeaderMap) -> Result<Operator, PageError> {
    let id = cookie(headers, cookie_name(app)).ok_or(PageError::SignIn)?;
    let session = app
        .dashboard
        .get(id, now_secs(), &app.config.dashboard)
        .ok_or(PageError::SignIn)?;
    Ok(Operator {
        session,
        id: id.to_owned(),
    })
}

/// Whether a POST comes from a page of this controller. A browser that
/// sends `Sec-Fetch-Site` (every current one; pages cannot forge it) is
/// judged by it: `same-origin` only. Its `Origin` then is `null` for our
/// own forms (the pages' `Referrer-Policy: no-referrer` makes it so), or
/// must be this controller's. Without `Sec-Fetch-Site`, an `Origin` must
/// be this controller's (`null` is refused: a sandboxed frame anywhere
/// sends it); a client that sends neither (no browser of recent years) is
/// judged by the CSRF token alone.
fn same_origin(app: &App, headers: &HeaderMap, uri: &Uri) -> Result<(), PageError> {
    let refused = || PageError::Forgery("a form posted from another site is refused");
    let mut sites = headers.get_all("sec-fetch-site").iter();
    let fetch_site = match (sites.next(), sites.next()) {
        (None, _) => false,
        (Some(site), None) if site.as_bytes() == b"same-origin" => true,
        _ => return Err(refused()),
    };
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let origin = match (origins.next(), origins.next()) {
        (None, _) => return Ok(()),
        (Some(o), None) => o.as_bytes(),
        _ => return Err(refused()),
    };
    if origin == b"null" {
        return if fetch_site { Ok(()) } else { Err(refused()) };
    }
    let host = headers
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| uri.authority().map(|a| a.as_str().as_bytes()));
    let scheme: &[u8] = if app.config.tls.is_some() {
        b"https://"
    } else {
        b"http://"
    };
    match host {
        Some(host)
            if origin.len() == scheme.len() + host.len()
                && origin.starts_with(scheme)
                && origin[scheme.len()..].eq_ignore_ascii_case(host) =>
        {
            Ok(())
        }
        _ => Err(refused()),
    }
}

/// A form's fields: each at most once, only `allowed` ones; the body at
/// most [`MAX_FORM_BYTES`].
fn form(body: &Bytes, allowed: &[&str]) -> Result<HashMap<String, String>, PageError> {
    if body.len() > MAX_FORM_BYTES {
        return Err(PageError::BadRequest(format!(
            "a form is at most {MAX_FORM_BYTES} bytes"
        )));
    }
    fields(body, allowed)
}

/// A page's query: as a form, at most [`MAX_QUERY_BYTES`].
fn query(raw: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, PageError> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_BYTES {
        return Err(PageError::BadRequest(format!(
            "a query is at most {MAX_QUERY_BYTES} bytes"
        )));
    }
    fields(raw.as_bytes(), allowed)
}

fn fields(bytes: &[u8], allowed: &[&str]) -> Result<HashMap<String, String>, PageError> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(bytes) {
        if !allowed.contains(&k.as_ref()) {
            return Err(PageError::BadRequest(format!("unknown field {k:?}")));
        }
        if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(PageError::BadRequest(format!("field {k:?} given twice")));
        }
    }
    Ok(out)
}

/// A signed-in POST: from this controller's pages, with the session's
/// CSRF token in `csrf`. The operator and the form's other fields.
pub(crate) fn checked_post(
    app: &App,
    headers: &HeaderMap,
    uri: &Uri,
    body: &Bytes,
    allowed: &[&str],
) -> Result<(Operator, HashMap<String, String>), PageError> {
    same_origin(app, headers, uri)?;
    let operator = operator(app, headers)?;
    let mut all = vec!["csrf"];
    all.extend_from_slice(allowed);
    let mut fields = form(body, &all)?;
    let token = fields.remove("csrf").unwrap_or_default();
    if !operator.session.csrf_ok(&token) {
        return Err(PageError::Forgery(
            "this form's CSRF token is missing or not this session's; reload the page and try again",
        ));
    }
    Ok((operator, fields))
}

// === audit ===

/// Longest action or target kept in the audit trail; longer ones are cut.
const MAX_AUDIT_FIELD: usize = 128;

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Adds to the audit trail what `session`'s operator did from `peer`: a
/// failure to write it is logged at `warn` (what was done is done).
pub(crate) async fn audit(
    app: &App,
    session: &Session,
    peer: &Peer,
    action: &str,
    target: &str,
    outcome: &str,
) {
    let role = session.role.as_str();
    audit_as(
        app,
        &session.identity.label(),
        role,
        peer,
        action,
        target,
        outcome,
    )
    .await;
}

/// Adds to the audit trail what `who` with `role` did from `peer` (a
/// sign-in refused to a verified identity has no session).
pub(crate) async fn audit_as(
    app: &App,
    who: &str,
    role: &str,
    peer: &Peer,
    action: &str,
    target: &str,
    outcome: &str,
) {
    let entry = crate::store::AuditEntry {
        id: crate::outbox::new_id(),
        at: now_secs(),
        who: cut(who, 4 * MAX_AUDIT_FIELD),
        role: role.to_owned(),
        client: peer.addr.map(|a| a.ip().to_string()),
        action: cut(action, MAX_AUDIT_FIELD),
        target: cut(target, MAX_AUDIT_FIELD),
        outcome: cut(outcome, 4 * MAX_AUDIT_FIELD),
    };
    if let Err(e) = app.store.audit(&entry).await {
        tracing::warn!(error = %e, who = entry.who, action = entry.action, "dashboard action not audited");
    }
}

// === sign in and out ===

#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage {
    certificate: bool,
    oidc: bool,
    message: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/signed_in.html")]
struct SignedInPage {
    who: String,
    role: &'static str,
}

fn admin_certificate(app: &App, peer: &Peer) -> Option<[u8; 32]> {
    let pin = app.config.admin_certificate_sha256?;
    let cert = peer.cert.as_ref()?;
    (cert.sha256() == pin).then_some(pin)
}

/// `GET /dashboard/login`: the sign-in form, or the overview when signed
/// in already.
async fn login_page(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if operator(&app, &headers).is_ok() {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    page(&LoginPage {
        certificate: admin_certificate(&app, &peer).is_some(),
        oidc: app.config.dashboard.oidc.is_some(),
        message: None,
    })
}

/// `POST /dashboard/login` (`token`, or `certificate=1` over HTTPS with
/// the pinned admin certificate): a new session, its cookie, and the
/// overview. Failures are counted per client before the credential is
/// judged ([`session::Sessions::may_try`]).
async fn login(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, PageError> {
    same_origin(&app, &headers, &uri)?;
    let now = now_secs();
    let client = peer.addr.map(|a| a.ip());
    let config = &app.config.dashboard;
    if !app
        .dashboard
        .may_try(client, now, config.failed_logins_per_minute)
    {
        tracing::warn!(client = ?client, "dashboard sign-in refused: too many failures this minute");
        return Err(PageError::TooMany);
    }
    let fields = form(&body, &["token", "certificate"])?;
    let signed = match (fields.get("token"), fields.get("certificate")) {
        (Some(token), None) if !token.trim().is_empty() && token.len() <= 4_096 => {
            let hash = crate::config::token_hash(token);
            if hash == app.config.admin_token {
                Some((Identity::AdminToken, Role::Responder, hash))
            } else if config.viewer_tokens.contains(&hash) {
                Some((
                    Identity::ViewerToken(hex::encode(&hash[..4])),
                    Role::Viewer,
                    hash,
                ))
            } else {
                None
            }
        }
        (None, Some(_)) => admin_certificate(&app, &peer)
            .map(|pin| (Identity::AdminCertificate, Role::Responder, pin)),
        _ => None,
    };
    let Some((identity, role, credential)) = signed else {
        if app.dashboard.all_over(now, config.failed_logins_per_minute) {
            tracing::warn!(client = ?client, "dashboard sign-in refused: too many failures of every client this minute");
            return Err(PageError::TooMany);
        }
        app.dashboard.failed(client, now);
        tracing::warn!(client = ?client, "dashboard sign-in failed");
        return Err(PageError::BadCredential);
    };
    // A session that came with the request ends: a new id at every
    // sign-in, so that an id planted before it opens nothing.
    if let Some(old) = cookie(&headers, cookie_name(&app)) {
        app.dashboard.close(old);
    }
    let label = identity.label();
    let id = app
        .dashboard
        .open(identity, role, credential, now, config)
        .map_err(|e| {
            tracing::error!(error = %e, "dashboard session not opened");
            PageError::Internal
        })?;
    tracing::info!(who = label, role = role.as_str(), client = ?client, "dashboard sign-in");
    if let Some(session) = app.dashboard.get(&id, now, config) {
        audit(&app, &session, &peer, "sign-in", "", "signed in").await;
    }
    let mut response = Redirect::to("/dashboard").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&app, &id, config.max_age)?);
    Ok(response)
}

fn set_cookie(app: &App, value: &str, max_age: u64) -> Result<HeaderValue, PageError> {
    let secure = if app.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        cookie_name(app)
    ))
    .map_err(|_| PageError::Internal)
}

fn prelogin_name(app: &App) -> &'static str {
    if app.config.tls.is_some() {
        PRELOGIN_TLS
    } else {
        PRELOGIN_PLAIN
    }
}

fn prelogin_cookie(app: &App, value: &str, max_age: u64) -> Result<HeaderValue, PageError> {
    let secure = if app.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        prelogin_name(app)
    ))
    .map_err(|_| PageError::Internal)
}

/// `GET /dashboard/oidc/start`: a sign-in through the OpenID provider
/// begins: its state, nonce and PKCE verifier are kept under a new
/// pre-login cookie, and the browser goes to the provider.
async fn oidc_start(State(app): State<Arc<App>>, peer: Peer) -> Result<Response, PageError> {
    let Some(oidc) = &app.config.dashboard.oidc else {
        return Err(PageError::NotFound(
            "sign-in through an identity provider is not configured".to_owned(),
        ));
    };
    let (cookie, url) = app
        .dashboard
        .oidc
        .start(oidc, peer.addr.map(|a| a.ip()), now_secs())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, client = ?peer.addr.map(|a| a.ip()), "dashboard sign-in through the identity provider not started");
            PageError::Unavailable(
                "the identity provider cannot be reached; try again, or sign in with a token",
            )
        })?;
    let mut response = Redirect::to(&url).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        prelogin_cookie(&app, &cookie, oidc::PENDING_TTL)?,
    );
    Ok(response)
}

/// `GET /dashboard/oidc/callback`: the provider sends the browser back.
/// The sign-in under the request's pre-login cookie is taken out (a
/// replay finds nothing: `400`), its `state` must match (`403`), the code
/// is exchanged and the ID token checked (`401` when the provider refuses
/// or the token fails), and the identity must map to a role (`403`).
/// Then a session opens as with a token, and a page sends the browser on
/// to the overview (a redirect would not carry the `SameSite=Strict`
/// session cookie, as the navigation began at another site).
async fn oidc_callback(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let Some(oidc) = &app.config.dashboard.oidc else {
        return Err(PageError::NotFound(
            "sign-in through an identity provider is not configured".to_owned(),
        ));
    };
    let client = peer.addr.map(|a| a.ip());
    let now = now_secs();
    // The pre-login cookie is cleared by every answer: a sign-in is tried
    // once.
    let clear = prelogin_cookie(&app, "", 0)?;
    let result = oidc_finish(&app, oidc, &peer, &headers, raw.as_deref(), now).await;
    let mut response = match result {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(client = ?client, error = %e, "dashboard sign-in through the identity provider refused");
            e.into_response()
        }
    };
    response.headers_mut().append(header::SET_COOKIE, clear);
    Ok(response)
}

async fn oidc_finish(
    app: &App,
    oidc: &config::OidcConfig,
    peer: &Peer,
    headers: &HeaderMap,
    raw: Option<&str>,
    now: u64,
) -> Result<Response, PageError> {
    let fields = query(
        raw,
        &[
            "code",
            "state",
            "iss",
            "error",
            "error_description",
            "error_uri",
            "session_state",
        ],
    )?;
    let not_started = || {
        PageError::BadRequest(
            "this sign-in was not started in this browser, was used already, or took longer than 10 minutes; start again"
                .to_owned(),
        )
    };
    let cookie = cookie(headers, prelogin_name(app)).ok_or_else(not_started)?;
    let pending = app
        .dashboard
        .oidc
        .take(cookie, now)
        .ok_or_else(not_started)?;
    let state = fields
        .get("state")
        .map(String::as_bytes)
        .unwrap_or_default();
    if !constant_time_eq(state, pending.state.as_bytes()) {
        return Err(PageError::Forgery(
            "this sign-in's state is not the one this browser was sent with",
        ));
    }
    if let Some(iss) = fields.get("iss")
        && *iss != oidc.issuer
    {
        return Err(PageError::Forgery(
            "this sign-in comes back from another identity provider",
        ));
    }
    if let Some(error) = fields.get("error") {
        tracing::warn!(error = %error, "the identity provider refused a dashboard sign-in");
        return Err(PageError::NotSignedIn(format!(
            "the identity provider refused the sign-in ({})",
            cut(error, 64)
        )));
    }
    let code = fields
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= 4_096)
        .ok_or_else(|| PageError::BadRequest("no authorization code".to_owned()))?;
    let verified = app
        .dashboard
        .oidc
        .finish(oidc, &pending, code)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "dashboard sign-in: the identity provider's answer refused");
            match e {
                oidc::OidcError::Unavailable(_) => {
                    PageError::Unavailable("the identity provider cannot be reached; try again")
                }
                _ => PageError::NotSignedIn(
                    "the identity provider did not confirm this sign-in; start again".to_owned(),
                ),
            }
        })?;
    let identity = Identity::Oidc {
        issuer: verified.issuer.clone(),
        subject: verified.subject.clone(),
        name: verified.name.clone(),
    };
    let Some(role) = verified.role else {
        audit_as(
            app,
            &identity.label(),
            "none",
            peer,
            "sign-in",
            "",
            "refused: no dashboard role in the identity's claims",
        )
        .await;
        return Err(PageError::NoRole);
    };
    if let Some(old) = self::cookie(headers, cookie_name(app)) {
        app.dashboard.close(old);
    }
    let credential: [u8; 32] =
        sha2::Sha256::digest(format!("oidc\0{}\0{}", verified.issuer, verified.subject).as_bytes())
            .into();
    let config = &app.config.dashboard;
    let label = identity.label();
    let id = app
        .dashboard
        .open(identity, role, credential, now, config)
        .map_err(|e| {
            tracing::error!(error = %e, "dashboard session not opened");
            PageError::Internal
        })?;
    tracing::info!(who = label, role = role.as_str(), client = ?peer.addr.map(|a| a.ip()), "dashboard sign-in");
    if let Some(session) = app.dashboard.get(&id, now, config) {
        audit(app, &session, peer, "sign-in", "", "signed in").await;
    }
    let mut response = page(&SignedInPage {
        who: label,
        role: role.as_str(),
    })?;
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(app, &id, config.max_age)?);
    Ok(response)
}

/// Whether `a` and `b` are equal, in time that depends on their lengths
/// only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /dashboard/logout`: ends the session and clears its cookie.
async fn logout(
    State(app): State<Arc<App>>,
    peer: Peer,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, PageError> {
    let (operator, _) = checked_post(&app, &headers, &uri, &body, &[])?;
    app.dashboard.close(&operator.id);
    tracing::info!(
        who = operator.session.identity.label(),
        "dashboard sign-out"
    );
    audit(&app, &operator.session, &peer, "sign-out", "", "signed out").await;
    let mut response = Redirect::to("/dashboard/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&app, "", 0)?);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_counts_only_when_it_is_there_once() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; vigil-dashboard=xyz; b=2"),
        );
        assert_eq!(cookie(&h, "vigil-dashboard"), Some("xyz"));
        assert_eq!(cookie(&h, "vigil"), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("vigil-dashboard=abc"),
        );
        assert_eq!(cookie(&h, "vigil-dashboard"), None);
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("vigil-dashboard=a;vigil-dashboard=b"),
        );
        assert_eq!(cookie(&h, "vigil-dashboard"), None);
    }

    #[test]
    fn a_form_field_is_known_and_given_once() {
        let ok = fields(b"reference=a%3Cb&csrf=x", &["reference", "csrf"]).unwrap();
        assert_eq!(ok["reference"], "a<b");
        assert!(fields(b"reference=a&reference=b", &["reference"]).is_err());
        assert!(fields(b"other=1", &["reference"]).is_err());
        assert!(form(&Bytes::from(vec![b'a'; MAX_FORM_BYTES + 1]), &["a"]).is_err());
    }
}
