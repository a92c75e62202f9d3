//! The dashboard at scale (`docs/dashboard.md`, Scale): fills a store with
//! `--sessions` session baselines of `--users` users, `--detections`
//! detections over the last `--days` days (a tenth of them today) with
//! labels, users at risk, revocations, trusts and audit rows; then serves
//! it with the controller's own router on loopback and times, as the
//! server answers them, the overview, a user page (of the user with the
//! most detections), a deep page of the detections list (by cursor) and
//! of the audit trail: median and max of `--runs` requests each, after one
//! unmeasured.
//!
//! ```text
//! cargo run --release -p vigil-controller --example dashboard_scale -- \
//!     --store sqlite|postgres|both --sessions 1000000 --users 100000 \
//!     --detections 300000 --runs 9
//! ```
//!
//! A smoke run: `--sessions 20000 --users 2000 --detections 6000 --runs 3`.
//! `--explain` prints the plan and time of each heavier query of the
//! pages; `--old-indexes` puts back the indexes as they were before
//! migration 0023, to compare.
//! PostgreSQL is the server on 127.0.0.1:5432 (trust), in a fresh database
//! made through `test` and dropped after. The fill is multi-row `INSERT`s
//! of generated values, one transaction per table.

use std::error::Error;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sqlx::AnyPool;

const ADMIN: &str = "admin-token-0123456789-scale";

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// A fixed stream of numbers (splitmix64): the same store every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn user_key(i: u64) -> String {
    // Never all zero.
    format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
}

fn session_key(i: u64) -> String {
    format!(
        "{:016x}{:016x}",
        i.wrapping_mul(0xbf58_476d_1ce4_e5b9),
        i ^ 0x5eed
    )
}

/// A session record as a node sends it: one request of a browser.
fn records() -> Result<Vec<String>, Box<dyn Error>> {
    let engine = vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
    );
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ];
    let mut out = Vec::new();
    for (i, ua) in agents.iter().enumerate() {
        let cookie = format!("cookie-{i}");
        let key = engine
            .key_for_credential(cookie.as_bytes())
            .ok_or("a key")?;
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("cookie", format!("session={cookie}").parse()?);
        headers.insert("user-agent", ua.parse()?);
        let view = vigil_engine::RequestView {
            peer: format!("192.0.2.{}", 10 + i).parse()?,
            headers: &headers,
            now_secs: 1_700_000_000,
            tls: Default::default(),
            facts: Default::default(),
        };
        let allow = vigil_engine::Policy {
            low: vigil_engine::Action::Allow,
            medium: vigil_engine::Action::Allow,
            high: vigil_engine::Action::Allow,
            thresholds: None,
        };
        engine
            .evaluate(&view, &allow)
            .map_err(|e| format!("judged: {e:?}"))?;
        out.push(
            vigil_fleet::Record(engine.scorer().export(&key).ok_or("a record")?.to_vec())
                .to_string(),
        );
    }
    Ok(out)
}

/// Inserts `n` rows made by `row` (a parenthesised tuple of SQL literals
/// of generated values) into `table (columns)`, 1,000 a statement, in
/// one transaction.
async fn fill(
    pool: &AnyPool,
    table: &str,
    columns: &str,
    n: u64,
    mut row: impl FnMut(u64, &mut String),
) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let mut i = 0;
    while i < n {
        let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
        let end = (i + 1000).min(n);
        for j in i..end {
            if j > i {
                sql.push(',');
            }
            row(j, &mut sql);
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
        i = end;
    }
    tx.commit().await?;
    println!(
        "  {table}: {n} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Sizes {
    sessions: u64,
    users: u64,
    detections: u64,
    days: u64,
    runs: usize,
    /// Print each query's plan and time (`--explain`).
    explain: bool,
    /// The indexes as they were before migration 0023 (`--old-indexes`),
    /// to compare.
    old_indexes: bool,
}

const ACTIONS: [&str; 4] = ["block", "step_up", "step_up", "log"];
const REASONS: [&str; 5] = [
    "device_changed:45,network_changed:40",
    "network_changed:40",
    "impossible_travel:60,asn_changed:20",
    "ja4_changed:35,device_changed:45",
    "country_changed:30",
];
const ROUTES: [&str; 4] = ["app", "api", "checkout", "admin"];

/// Fills the store at `url` (migrated) and returns the user with the
/// most detections (the user page timed).
async fn populate(url: &str, s: &Sizes, now: u64) -> Result<String, Box<dyn Error>> {
    let pool = AnyPool::connect(url).await?;
    let recs = records()?;
    let span = s.days * 86_400;
    let (users, sessions) = (s.users, s.sessions);
    let mut g = Gen(7);
    fill(&pool, "user_names", "user_key, name, at", users, |i, q| {
        let _ = write!(q, "('{}', 'user-{i}', {})", user_key(i), now - span);
    })
    .await?;
    fill(
        &pool,
        "session_baselines",
        "session, user_key, first_seen, record, confirmed, seq, updated, node",
        sessions,
        |i, q| {
            let first = now - g.below(span);
            let _ = write!(
                q,
                "('{}', '{}', {first}, '{}', {}, {i}, {}, '{}')",
                session_key(i),
                user_key(i % users),
                recs[(i % 2) as usize],
                u8::from(i % 10 == 0),
                first + g.below(now - first + 1),
                if i % 3 == 0 { "b" } else { "a" },
            );
        },
    )
    .await?;
    // Detections: a skewed draw of users (a few users caught often), a
    // tenth of them within the last day, the rest over the period.
    let hot = (users / 100).max(1);
    fill(
        &pool,
        "detections",
        "node, reference, session, user_key, route, rule, action, enforced, score, reasons, at, \
         false_positive, confirmed_compromise, client_key, asn",
        s.detections,
        |i, q| {
            let u = if g.below(4) == 0 {
                g.below(hot)
            } else {
                g.below(users)
            };
            let session = u + users * g.below((sessions / users).max(1));
            let at = if i % 10 == 0 {
                now - g.below(86_400)
            } else {
                now - g.below(span)
            };
            let action = ACTIONS[(i % 4) as usize];
            let label = g.below(100);
            let _ = write!(
                q,
                "('{}', 'ref-{i:010}', '{}', '{}', '{}', {}, '{action}', {}, {}, '{}', {at}, {}, {}, \
                 '00000000000000000000ffffc0{:06x}', {})",
                if i % 2 == 0 { "a" } else { "b" },
                session_key(session),
                user_key(u),
                ROUTES[(i % 4) as usize],
                if i % 5 == 0 {
                    "NULL".to_owned()
                } else {
                    "'block-risky'".to_owned()
                },
                u8::from(action != "log"),
                50 + g.below(50),
                REASONS[(i % 5) as usize],
                if label == 0 {
                    (at + 600).to_string()
                } else {
                    "NULL".to_owned()
                },
                if label == 1 {
                    (at + 900).to_string()
                } else {
                    "NULL".to_owned()
                },
                g.below(1 << 24),
                64_496 + g.below(60_000),
            );
        },
    )
    .await?;
    // Users at risk: a tenth with detections in force, a hundredth with
    // risk points, a two-hundredth revoked.
    fill(
        &pool,
        "user_detections",
        "user_key, count, until, seq",
        users / 10,
        |i, q| {
            let _ = write!(
                q,
                "('{}', {}, {}, {i})",
                user_key(i * 10),
                1 + g.below(4),
                now + 60 + g.below(3_600)
            );
        },
    )
    .await?;
    fill(
        &pool,
        "user_risk",
        "user_key, points, until, at, seq",
        users / 100,
        |i, q| {
            let _ = write!(
                q,
                "('{}', {}, {}, {}, {i})",
                user_key(i * 100 + 3),
                10 + g.below(60),
                now + 86_400,
                now - g.below(86_400)
            );
        },
    )
    .await?;
    fill(
        &pool,
        "revoked_users",
        "user_key, at, seq",
        users / 200,
        |i, q| {
            let _ = write!(
                q,
                "('{}', {}, {i})",
                user_key(i * 200 + 7),
                now - g.below(span)
            );
        },
    )
    .await?;
    fill(
        &pool,
        "revoked_sessions",
        "session, at, seq",
        sessions / 200,
        |i, q| {
            let _ = write!(
                q,
                "('{}', {}, {i})",
                session_key(i * 200 + 1),
                now - g.below(span)
            );
        },
    )
    .await?;
    fill(
        &pool,
        "user_trust",
        "user_key, what, value, at, seq",
        users / 10,
        |i, q| {
            let _ = write!(
                q,
                "('{}', 'asn', '{}', {}, {i})",
                user_key(i * 10 + 1),
                64_496 + i,
                now - g.below(span)
            );
        },
    )
    .await?;
    fill(
        &pool,
        "audit",
        "id, at, who, role, client, action, target, outcome",
        (s.detections / 10).max(100),
        |i, q| {
            let _ = write!(
                q,
                "('{:032x}', {}, 'admin token', 'responder', '192.0.2.1', 'false-positive', \
                 'ref-{i:010}', 'marked')",
                u128::from(i) * 0x9e37_79b9_7f4a_7c15_u128,
                now - g.below(span) / 60 * 60
            );
        },
    )
    .await?;
    let started = Instant::now();
    if url.starts_with("postgres") {
        // What autovacuum does to a table filled by inserts: statistics,
        // and the visibility map that lets an index answer alone.
        sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    } else {
        sqlx::query("ANALYZE").execute(&pool).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await?;
    }
    println!(
        "  (VACUUM) ANALYZE in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let top: String = sqlx::query_scalar(
        "SELECT user_key FROM detections WHERE user_key IS NOT NULL \
         GROUP BY user_key ORDER BY COUNT(*) DESC, user_key LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(top)
}

/// Each of the pages' heavier queries: its plan and how long it took.
async fn explain(
    pool: &AnyPool,
    postgres: bool,
    now: u64,
    top: &str,
) -> Result<(), Box<dyn Error>> {
    let since = (now / 3_600 * 3_600).saturating_sub(23 * 3_600);
    let columns = "node, reference, session, route, rule, action, enforced, score, reasons, at, \
                   false_positive, user_key, confirmed_compromise";
    let deep: (i64, String, String) = sqlx::query_as(
        "SELECT at, node, reference FROM detections ORDER BY at DESC, node DESC, reference DESC \
         LIMIT 1 OFFSET 500",
    )
    .fetch_one(pool)
    .await?;
    let queries = [
        (
            "overview: per hour",
            format!(
                "SELECT at / 3600 AS b, action, COUNT(*) FROM detections WHERE at >= {since} \
                 GROUP BY b, action ORDER BY b, action"
            ),
        ),
        (
            "overview: reasons",
            format!(
                "SELECT reasons FROM detections WHERE at >= {since} ORDER BY at DESC LIMIT 10000"
            ),
        ),
        (
            "overview: users at risk",
            format!(
                "SELECT k.user_key, COALESCE(d.count, 0) AS dc, COALESCE(r.points, 0) AS rp, v.at, n.name, \
                 (CASE WHEN COALESCE(d.count, 0) > 3 THEN 3 ELSE COALESCE(d.count, 0) END) * 30 \
                 + COALESCE(r.points, 0) AS score \
                 FROM (SELECT user_key FROM user_detections WHERE count > 0 AND until > {now} \
                       UNION SELECT user_key FROM user_risk WHERE points > 0 AND until > {now} \
                       UNION SELECT user_key FROM revoked_users) k \
                 LEFT JOIN user_detections d ON d.user_key = k.user_key AND d.count > 0 AND d.until > {now} \
                 LEFT JOIN user_risk r ON r.user_key = k.user_key AND r.points > 0 AND r.until > {now} \
                 LEFT JOIN revoked_users v ON v.user_key = k.user_key \
                 LEFT JOIN user_names n ON n.user_key = k.user_key \
                 ORDER BY score DESC, dc DESC, rp DESC, CASE WHEN v.at IS NULL THEN 1 ELSE 0 END, k.user_key \
                 LIMIT 16"
            ),
        ),
        (
            "overview: newest",
            format!(
                "SELECT {columns} FROM detections ORDER BY at DESC, node DESC, reference DESC LIMIT 16"
            ),
        ),
        (
            "list: page by cursor",
            format!(
                "SELECT {columns} FROM detections WHERE at <= {at} AND (at, node, reference) < \
                 ({at}, '{node}', '{reference}') ORDER BY at DESC, node DESC, reference DESC LIMIT 51",
                at = deep.0,
                node = deep.1,
                reference = deep.2
            ),
        ),
        (
            "list: offset 100,000",
            format!(
                "SELECT {columns} FROM detections ORDER BY at DESC, node DESC, reference DESC \
                 LIMIT 51 OFFSET 100000"
            ),
        ),
        (
            "user: sessions",
            format!(
                "SELECT b.session, b.record, b.confirmed, b.node, r.session FROM session_baselines b \
                 LEFT JOIN revoked_sessions r ON r.session = b.session \
                 WHERE b.user_key = '{top}' ORDER BY b.updated DESC, b.session LIMIT 100"
            ),
        ),
        (
            "user: detections",
            format!(
                "SELECT {columns} FROM detections WHERE user_key = '{top}' \
                 ORDER BY at DESC, node DESC, reference DESC LIMIT 101"
            ),
        ),
    ];
    for (what, sql) in &queries {
        let started = Instant::now();
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(pool)
            .await?
            .len();
        let took = started.elapsed();
        println!("  {what}: {n} rows in {:.1} ms", took.as_secs_f64() * 1e3);
        let plan = if postgres {
            format!("EXPLAIN {sql}")
        } else {
            format!("EXPLAIN QUERY PLAN {sql}")
        };
        for row in sqlx::query(sqlx::AssertSqlSafe(plan))
            .fetch_all(pool)
            .await?
        {
            let line: String = if postgres {
                sqlx::Row::try_get(&row, 0)?
            } else {
                sqlx::Row::try_get(&row, 3)?
            };
            println!("      {line}");
        }
    }
    Ok(())
}

/// Median and max of `runs` answers to `path`, after one unmeasured.
async fn time(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
    runs: usize,
) -> Result<(Duration, Duration, usize), Box<dyn Error>> {
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    for i in 0..=runs {
        let started = Instant::now();
        let r = client
            .get(format!("{base}{path}"))
            .header("cookie", format!("vigil-dashboard={cookie}"))
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        let took = started.elapsed();
        if status != 200 {
            return Err(format!("{path}: {status}: {body}").into());
        }
        size = body.len();
        if i > 0 {
            times.push(took);
        }
    }
    times.sort();
    Ok((times[times.len() / 2], times[times.len() - 1], size))
}

/// The cursor of the last row's "older" link on a list page.
fn next_cursor(html: &str) -> Option<String> {
    let at = html.find("?before=")? + 8;
    let end = html[at..].find('"')?;
    Some(html[at..at + end].to_owned())
}

async fn run(postgres: bool, s: &Sizes) -> Result<(), Box<dyn Error>> {
    println!(
        "{}: {} sessions, {} users, {} detections",
        if postgres { "PostgreSQL" } else { "SQLite" },
        s.sessions,
        s.users,
        s.detections
    );
    let dir = tempfile::tempdir()?;
    let name = format!("vigil_dashboard_scale_{}", std::process::id());
    let admin_url = "postgres://postgres@127.0.0.1:5432/test";
    sqlx::any::install_default_drivers();
    let url = if postgres {
        let admin = AnyPool::connect(admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        format!("postgres://postgres@127.0.0.1:5432/{name}")
    } else {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("scale.db").display()
        )
    };
    let result = measure(&url, dir.path(), s).await;
    if postgres {
        let admin = AnyPool::connect(admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await?;
    }
    result
}

async fn measure(url: &str, dir: &std::path::Path, s: &Sizes) -> Result<(), Box<dyn Error>> {
    // The schema, as the controller applies it.
    drop(vigil_controller::store::Store::open(url).await?);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let started = Instant::now();
    let top = populate(url, s, now).await?;
    println!("  filled in {:.1} s", started.elapsed().as_secs_f64());
    if s.old_indexes || s.explain {
        let pool = AnyPool::connect(url).await?;
        if s.old_indexes {
            for sql in [
                "DROP INDEX detections_newest",
                "DROP INDEX detections_user_newest",
                "DROP INDEX audit_newest",
                "DROP INDEX session_baselines_user_seen",
                "CREATE INDEX detections_at ON detections (at)",
                "CREATE INDEX detections_user ON detections (user_key, at)",
                "CREATE INDEX audit_at ON audit (at)",
                "CREATE INDEX session_baselines_user ON session_baselines (user_key)",
                "ANALYZE",
            ] {
                sqlx::query(sql).execute(&pool).await?;
            }
            println!("  (indexes as before migration 0023)");
        }
        if s.explain {
            explain(&pool, url.starts_with("postgres"), now, &top).await?;
        }
        pool.close().await;
    }

    std::fs::write(dir.join("hash.key"), "11".repeat(32))?;
    std::fs::write(dir.join("admin.token"), ADMIN)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    std::fs::write(
        dir.join("controller.toml"),
        format!(
            "listen = \"{addr}\"\nstore = {url:?}\nhash_key_file = \"hash.key\"\n\
             admin_token_file = \"admin.token\"\nuser_names = \"clear\"\n\
             [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n",
            hex::encode(vigil_controller::config::token_hash(
                "node-a-token-0123456789"
            ))
        ),
    )?;
    let config = vigil_controller::Config::load(&dir.join("controller.toml"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vigil_controller::run_on(listener, config, async {
        let _ = stopped.await;
    }));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        if Instant::now() > deadline {
            return Err("the controller did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .post(format!("{base}/dashboard/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("origin", &base)
        .body(format!("token={ADMIN}"))
        .send()
        .await?;
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("vigil-dashboard="))
        .and_then(|v| v.split(';').next())
        .ok_or("no session cookie")?
        .to_owned();

    // A cursor deep in the lists: follow ten pages, then time the next.
    let mut deep = Vec::new();
    for list in ["/dashboard/detections", "/dashboard/audit"] {
        let mut path = list.to_owned();
        for _ in 0..10 {
            let html = client
                .get(format!("{base}{path}"))
                .header("cookie", format!("vigil-dashboard={cookie}"))
                .send()
                .await?
                .text()
                .await?;
            match next_cursor(&html) {
                Some(c) => path = format!("{list}?before={c}"),
                None => break,
            }
        }
        deep.push(path);
    }
    let pages = [
        ("overview", "/dashboard".to_owned()),
        ("user page", format!("/dashboard/user?key={top}")),
        ("user's sessions", format!("/dashboard/sessions?user={top}")),
        (
            "user's timeline",
            format!("/dashboard/timeline?user={top}&before={now}"),
        ),
        ("precision, 28 days", "/dashboard/precision".to_owned()),
        ("detections, page 11", deep[0].clone()),
        ("audit, page 11", deep[1].clone()),
        (
            "detections, offset",
            format!(
                "/dashboard/detections?offset={}",
                (s.detections / 2).min(100_000)
            ),
        ),
    ];
    for (what, path) in &pages {
        let (median, max, size) = time(&client, &base, &cookie, path, s.runs).await?;
        println!(
            "  {what:<20} median {:>7.1} ms  max {:>7.1} ms  ({size} bytes)",
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
        );
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let s = Sizes {
        sessions: arg("--sessions", "1000000").parse()?,
        users: arg("--users", "100000").parse::<u64>()?.max(1),
        detections: arg("--detections", "300000").parse()?,
        days: arg("--days", "30").parse::<u64>()?.max(1),
        runs: arg("--runs", "9").parse::<usize>()?.max(1),
        explain: std::env::args().any(|a| a == "--explain"),
        old_indexes: std::env::args().any(|a| a == "--old-indexes"),
    };
    let store = arg("--store", "both");
    if store == "sqlite" || store == "both" {
        run(false, &s).await?;
    }
    if store == "postgres" || store == "both" {
        run(true, &s).await?;
    }
    Ok(())
}
