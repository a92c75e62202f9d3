//! A load run of the outbox (`docs/webhooks.md`, Delivery): `N` webhook
//! calls enqueued into the store, delivered by the outbox's worker to a
//! receiver on loopback that answers `200` at once; reports the enqueue
//! rate (one transaction a call, as the API makes them), then the delivery
//! rate of the backlog (worker start to last delivery seen, and to the
//! last outcome recorded).
//!
//! ```text
//! cargo run --release -p vigil-controller --example outbox_load -- \
//!     --store sqlite|postgres --calls 5000 --concurrency 16
//! ```
//!
//! PostgreSQL is the server on 127.0.0.1:5432 (database `test`), in a
//! fresh database dropped after. Everything — store client, worker,
//! receiver — shares this process and its cores.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vigil_controller::metrics::Metrics;
use vigil_controller::outbox::config::{Filter, Webhook};
use vigil_controller::outbox::{Outbox, Settings, new_id, webhook_endpoint};
use vigil_controller::store::Store;
use vigil_controller::store::outbox::NewDelivery;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let store_kind = arg("--store", "sqlite");
    let calls: u64 = arg("--calls", "5000").parse()?;
    let concurrency: usize = arg("--concurrency", "16").parse()?;
    let dir = tempfile::tempdir()?;
    let pg_name = format!("vigil_outbox_load_{}", new_id());
    let url = if store_kind == "postgres" {
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {pg_name}")))
            .execute(&admin)
            .await?;
        format!("postgres://postgres@127.0.0.1:5432/{pg_name}")
    } else {
        format!("sqlite://{}", dir.path().join("outbox.db").display())
    };
    let store = Store::open(&url).await?;

    let seen = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let receiver = axum::Router::new().fallback({
        let seen = Arc::clone(&seen);
        move || {
            seen.fetch_add(1, Ordering::Relaxed);
            async { "" }
        }
    });
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let hook = Webhook {
        name: "load".to_owned(),
        url: format!("http://{addr}/hook").parse()?,
        secret: b"load-secret-0123456789abcdef0123456789".to_vec(),
        events: Vec::new(),
        filter: Filter::default(),
        max_concurrency: concurrency,
    };
    let settings = Settings {
        poll: Duration::from_millis(10),
        max_queue: calls + 1,
        allow_http_loopback: true,
        ..Settings::default()
    };
    let outbox = Arc::new(Outbox::new(
        store.clone(),
        settings,
        &[hook],
        &[],
        None,
        Metrics::new()?,
    ));
    let endpoint = webhook_endpoint("load");
    let body = serde_json::json!({"version": 1, "type": "revocation", "revocation": {"scope": "user", "by": "load"}})
        .to_string();
    // Enqueued first, then delivered: each rate on its own.
    let started = Instant::now();
    for _ in 0..calls {
        let id = new_id();
        outbox
            .enqueue(&NewDelivery {
                id: &id,
                endpoint: &endpoint,
                kind: "webhook",
                body: &body,
                logout_id: None,
            })
            .await?;
    }
    let enqueued = started.elapsed();
    let started = Instant::now();
    tokio::spawn(Outbox::run(Arc::clone(&outbox)));
    while seen.load(Ordering::Relaxed) < calls {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if started.elapsed() > Duration::from_secs(600) {
            return Err("not every call delivered in 10 minutes".into());
        }
    }
    let delivered = started.elapsed();
    // The last outcomes are recorded just after the receiver answered.
    while store.pending(&endpoint).await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = started.elapsed();
    println!(
        "store={store_kind} calls={calls} concurrency={concurrency} \
         enqueue={:.0}/s delivered_all_in={:.2}s deliveries={:.0}/s recorded_all_in={:.2}s seen={}",
        calls as f64 / enqueued.as_secs_f64(),
        delivered.as_secs_f64(),
        calls as f64 / delivered.as_secs_f64(),
        recorded.as_secs_f64(),
        seen.load(Ordering::Relaxed),
    );
    if store_kind == "postgres" {
        drop(store);
        let admin = sqlx::AnyPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await?;
    }
    Ok(())
}
