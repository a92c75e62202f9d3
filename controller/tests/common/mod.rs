//! What the controller's integration tests share: a store per test
//! (a SQLite file in a temp dir, or a PostgreSQL database of its own made
//! through the `test` database and dropped after), a random name, a run
//! on both stores, and an HTTP client.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

/// The PostgreSQL database test databases are made through.
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A test's store.
pub enum Db {
    Sqlite(tempfile::TempDir),
    Postgres { name: String },
}

impl Db {
    pub async fn new(postgres: bool) -> Db {
        if !postgres {
            return Db::Sqlite(tempfile::tempdir().unwrap());
        }
        sqlx::any::install_default_drivers();
        let name = format!("vigil_test_{:016x}", rand_u64());
        let admin = sqlx::AnyPool::connect(PG_ADMIN)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        Db::Postgres { name }
    }

    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite://{}", dir.path().join("controller.db").display()),
            Db::Postgres { name } => format!("postgres://postgres@127.0.0.1:5432/{name}"),
        }
    }

    pub async fn drop_db(self) {
        if let Db::Postgres { name } = self {
            let admin = sqlx::AnyPool::connect(PG_ADMIN).await.unwrap();
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
        }
    }
}

/// A number unlikely to repeat: names of test databases, `jti`s.
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// Runs `test` on SQLite, then on PostgreSQL.
pub async fn both(test: impl AsyncFn(bool)) {
    test(false).await;
    test(true).await;
}

/// An HTTP client (rustls with ring, as the controller).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

/// A node's sync stream, read frame by frame, each frame within 20 s.
pub struct Stream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Stream {
    /// The stream at `sync_url` (`…/v1/sync?since=0`) for the node whose
    /// token is `token`, read past its hello and snapshot.
    pub async fn open(sync_url: String, token: &str) -> Stream {
        let response = client()
            .get(sync_url)
            .bearer_auth(token)
            .header(vigil_fleet::VERSION_HEADER, vigil_fleet::VERSION)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut s = Stream {
            response,
            buffer: Vec::new(),
        };
        assert!(matches!(s.next().await, vigil_fleet::Frame::Hello { .. }));
        assert!(matches!(
            s.next().await,
            vigil_fleet::Frame::SnapshotEnd { .. }
        ));
        s
    }

    /// The next frame.
    pub async fn next(&mut self) -> vigil_fleet::Frame {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return vigil_fleet::read_frame(&line[..line.len() - 1]).unwrap();
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("a frame within the deadline")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The changes of the next frame that is not a heartbeat.
    pub async fn next_changes(&mut self) -> Vec<vigil_fleet::Change> {
        loop {
            match self.next().await {
                vigil_fleet::Frame::Heartbeat { .. } => continue,
                vigil_fleet::Frame::Changes { changes, .. } => return changes,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}
