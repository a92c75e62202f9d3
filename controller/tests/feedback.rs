//! The feedback pipeline (`docs/dashboard.md`, Feedback pipeline), on
//! SQLite and on PostgreSQL: operators' labels become precision per reason
//! and per rule on `/dashboard/precision` and in the metrics, and
//! `vigil-controller export-labels` writes them in the format the
//! evaluator's replay reads — replayed here with a changed weight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Db, both, client};

use std::net::SocketAddr;
use std::time::Duration;

use vigil_fleet::{EventBatch, NodeEvent, NodeEventKind, SessionId, UserId, VERSION};

const ADMIN: &str = "admin-token-0123456789";
const NODE_A: &str = "node-a-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(20);

struct Controller {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    async fn start(store: &str) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), "11".repeat(32)).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN).unwrap();
        let hash = |t: &str| hex::encode(vigil_controller::config::token_hash(t));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let toml = format!(
            "listen = \"{addr}\"\nstore = {store:?}\nhash_key_file = \"hash.key\"\nadmin_token_file = \"admin.token\"\n\
             [[nodes]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n",
            hash(NODE_A),
        );
        std::fs::write(dir.path().join("controller.toml"), toml).unwrap();
        let config = vigil_controller::Config::load(&dir.path().join("controller.toml")).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            vigil_controller::run_on(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let c = Controller {
            addr,
            dir,
            stop: Some(stop),
            task,
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while client().get(c.url("/healthz")).send().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "controller did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn events(&self, events: Vec<NodeEvent>) {
        let r = client()
            .post(self.url("/v1/events"))
            .bearer_auth(NODE_A)
            .header("content-type", "application/json")
            .body(serde_json::to_string(&EventBatch { v: VERSION, events }).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn admin(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = client()
            .post(self.url(path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let answer: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    /// A dashboard session's cookie, signed in with the admin token.
    async fn sign_in(&self) -> String {
        let r = no_redirect()
            .post(self.url("/dashboard/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .header("origin", format!("http://{}", self.addr))
            .body(format!("token={ADMIN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let set = r.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    async fn page(&self, path: &str, cookie: &str) -> (u16, String) {
        let r = no_redirect()
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// A client that follows no redirect: the tests read each one.
fn no_redirect() -> reqwest::Client {
    let _ = client();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A detection the node reports: `reasons` with their points, the
/// policy's action for their sum (30/60: step_up/block) unless a rule
/// decided.
fn detection(
    reference: &str,
    session: u8,
    rule: Option<&str>,
    reasons: &[(&str, u8)],
    at: u64,
) -> NodeEvent {
    detection_of(reference, SessionId([session; 16]), rule, reasons, at)
}

fn detection_of(
    reference: &str,
    session: SessionId,
    rule: Option<&str>,
    reasons: &[(&str, u8)],
    at: u64,
) -> NodeEvent {
    detection_by(reference, session, None, rule, reasons, at)
}

fn detection_by(
    reference: &str,
    session: SessionId,
    user: Option<UserId>,
    rule: Option<&str>,
    reasons: &[(&str, u8)],
    at: u64,
) -> NodeEvent {
    let score: u32 = reasons.iter().map(|(_, p)| u32::from(*p)).sum();
    let action = if rule.is_some() || score >= 60 {
        "block"
    } else {
        "step_up"
    };
    NodeEvent {
        id: format!("event-{reference}"),
        kind: NodeEventKind::Detection {
            reference: reference.to_owned(),
            session: Some(session),
            user,
            route: "app".to_owned(),
            rule: rule.map(str::to_owned),
            action: action.to_owned(),
            enforced: true,
            score: u8::try_from(score.min(100)).unwrap(),
            reasons: reasons.iter().map(|(c, p)| ((*c).to_owned(), *p)).collect(),
            facts: None,
            at,
        },
    }
}

/// The value of the metric line carrying every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<i64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn labels_become_precision_metrics_and_an_export_the_evaluator_replays() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let t = now() - 3_600;
        c.events(vec![
            // Two travellers, marked false positive below.
            detection(
                "fp-1",
                1,
                None,
                &[("country_changed", 35), ("new_country_for_user", 30)],
                t,
            ),
            detection(
                "fp-2",
                2,
                None,
                &[("country_changed", 35), ("new_country_for_user", 30)],
                t + 1,
            ),
            // A false positive a rule blocked.
            detection("fp-rule", 3, Some("hosting"), &[("asn_changed", 30)], t + 2),
            // Confirmed compromises.
            // Just blocked: any lowering of either reason softens it.
            detection(
                "cc-1",
                4,
                None,
                &[("country_changed", 35), ("asn_changed", 30)],
                t + 3,
            ),
            detection("cc-2", 5, Some("hosting"), &[("ja4_mismatch", 70)], t + 4),
            // Never labelled: counted nowhere, exported never.
            detection("open", 6, None, &[("device_changed", 70)], t + 5),
        ])
        .await;
        for r in ["fp-1", "fp-2", "fp-rule"] {
            c.admin(
                "/v1/admin/detections/false-positive",
                serde_json::json!({ "reference": r }),
            )
            .await;
        }
        for r in ["cc-1", "cc-2"] {
            c.admin(
                "/v1/admin/detections/confirmed-compromise",
                serde_json::json!({ "reference": r }),
            )
            .await;
        }

        // The metrics, bounded: reasons by code, rules by name.
        let text = client()
            .get(c.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let m = |labels: &[&str]| metric(&text, "vigil_controller_labelled_detections", labels);
        assert_eq!(
            m(&["by=\"all\"", "label=\"false_positive\""]),
            Some(3),
            "{text}"
        );
        assert_eq!(
            m(&["by=\"all\"", "label=\"confirmed_compromise\""]),
            Some(2)
        );
        assert_eq!(
            m(&[
                "by=\"reason\"",
                "name=\"country_changed\"",
                "label=\"false_positive\""
            ]),
            Some(2)
        );
        assert_eq!(
            m(&[
                "by=\"reason\"",
                "name=\"country_changed\"",
                "label=\"confirmed_compromise\""
            ]),
            Some(1)
        );
        assert_eq!(
            m(&["by=\"reason\"", "name=\"device_changed\""]),
            None,
            "the unlabelled one is not counted"
        );
        assert_eq!(
            m(&[
                "by=\"rule\"",
                "name=\"hosting\"",
                "label=\"false_positive\""
            ]),
            Some(1)
        );
        assert_eq!(
            m(&[
                "by=\"rule\"",
                "name=\"hosting\"",
                "label=\"confirmed_compromise\""
            ]),
            Some(1)
        );
        assert_eq!(
            m(&[
                "by=\"rule\"",
                "name=\"(policy)\"",
                "label=\"false_positive\""
            ]),
            Some(2)
        );
        assert!(
            text.lines()
                .any(|l| l == "vigil_controller_labelled_detections_capped 0")
        );

        // The page, linked from the overview.
        let cookie = c.sign_in().await;
        let (status, overview) = c.page("/dashboard", &cookie).await;
        assert_eq!(status, 200);
        assert!(overview.contains("href=\"/dashboard/precision\""));
        let (status, page) = c.page("/dashboard/precision", &cookie).await;
        assert_eq!(status, 200, "{page}");
        assert!(
            page.contains(
                "<tr><td><code>country_changed</code></td><td>1</td><td>2</td><td>33.3%</td>"
            ),
            "{page}"
        );
        assert!(
            page.contains("<tr><td><code>hosting</code></td><td>1</td><td>1</td><td>50.0%</td>"),
            "{page}"
        );
        assert!(
            page.contains("<tr><td>2</td><td>3</td><td>40.0%</td>"),
            "{page}"
        );
        for bad in [
            "days=0",
            "days=366",
            "days=%2B5",
            "days=x",
            "days=1&days=2",
            "other=1",
        ] {
            let (status, _) = c
                .page(&format!("/dashboard/precision?{bad}"), &cookie)
                .await;
            assert_eq!(status, 400, "{bad}");
        }
        let (status, _) = c
            .page("/dashboard/precision?days=1", "vigil-dashboard=nothing")
            .await;
        assert_eq!(status, 303, "no session: to sign-in");

        // The export, by the command operators run.
        let out = c.dir.path().join("labels.jsonl");
        let run = |extra: &[&str]| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-controller"));
            cmd.arg("export-labels")
                .arg("--config")
                .arg(c.dir.path().join("controller.toml"))
                .arg("--since")
                .arg((t - 10).to_string())
                .arg("--out")
                .arg(&out)
                .args(extra)
                .current_dir(c.dir.path());
            cmd.output().unwrap()
        };
        let done = run(&[]);
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&done.stderr),
            "exported 5 labelled decisions\n"
        );
        let text = std::fs::read_to_string(&out).unwrap();
        // No session key (16 bytes of 0x01.. as hex) leaves the store.
        for s in 1u8..=6 {
            assert!(
                !text.contains(&hex::encode([s; 16])),
                "session key {s} exported"
            );
        }
        assert!(!text.contains("\"open\""));
        assert!(!out.with_extension("jsonl.partial").exists());
        let export = vigil_eval::replay::read_export(text.as_bytes(), 100).unwrap();
        assert!(export.complete);
        let refs: Vec<&str> = export
            .decisions
            .iter()
            .map(|d| d.reference.as_str())
            .collect();
        assert_eq!(refs, ["fp-1", "fp-2", "fp-rule", "cc-1", "cc-2"]);

        // Replayed with `new_country_for_user` halved: both travellers go
        // from block to step_up (35 + 15 = 50), nothing else moves.
        use vigil_eval::replay::{Setting, replay, suggest};
        let base = Setting::default();
        let mut changed = base.clone();
        changed.scale.insert("new_country_for_user".to_owned(), 0.5);
        let r = replay(&export.decisions, &base, &changed, 10);
        assert_eq!(r.base_agrees, 5);
        assert_eq!(r.false_positive.decisions, 3);
        assert_eq!(r.false_positive.changed, 2);
        assert_eq!(
            r.false_positive.transitions.get("block -> step_up"),
            Some(&2)
        );
        assert_eq!(r.confirmed_compromise.changed, 0);
        // And the labels argue for lowering exactly that reason (lowering
        // `country_changed` would spare them too, but let cc-1 through).
        let s = suggest(&export.decisions, &base);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(
            (
                s[0].reason.as_str(),
                s[0].factor,
                s[0].false_positives_spared
            ),
            ("new_country_for_user", 0.75, 2)
        );

        // Bounded: --max 2 writes two and says more were left out.
        let done = run(&["--max", "2"]);
        assert!(done.status.success());
        let export =
            vigil_eval::replay::read_export(std::fs::read(&out).unwrap().as_slice(), 100).unwrap();
        assert_eq!(export.decisions.len(), 2);
        assert!(!export.complete);
        // Bad times are refused with the flag's name, and write nothing.
        std::fs::remove_file(&out).unwrap();
        let done = run(&["--until", "2026-13-01"]);
        assert!(!done.status.success());
        assert!(String::from_utf8_lossy(&done.stderr).contains("--until \"2026-13-01\""));
        assert!(!out.exists());

        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// A node's engine under the controller's hash key, to make real session
/// records.
fn engine() -> vigil_engine::Engine {
    vigil_engine::Engine::new(
        vigil_engine::EngineConfig::default(),
        vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
    )
}

/// The record of `cookie`, bound to `user`, after one allowed request at
/// `at`.
fn record(engine: &vigil_engine::Engine, cookie: &str, user: &str, at: u64) -> vigil_fleet::Record {
    let key = engine.key_for_credential(cookie.as_bytes()).unwrap();
    engine.bind_user(key, user, at);
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("cookie", format!("session={cookie}").parse().unwrap());
    headers.insert(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
            .parse()
            .unwrap(),
    );
    let view = vigil_engine::RequestView {
        peer: "81.2.69.10".parse().unwrap(),
        headers: &headers,
        now_secs: at,
        tls: Default::default(),
        facts: Default::default(),
    };
    let allow = vigil_engine::Policy {
        low: vigil_engine::Action::Allow,
        medium: vigil_engine::Action::Allow,
        high: vigil_engine::Action::Allow,
        thresholds: None,
    };
    engine.evaluate(&view, &allow).unwrap();
    vigil_fleet::Record(engine.scorer().export(&key).unwrap().to_vec())
}

fn user_of(name: &str) -> UserId {
    UserId(
        vigil_engine::UserKey::for_name(
            &vigil_engine::SessionHashKey::from_bytes([0x11; 32]),
            name,
        )
        .as_u64(),
    )
}

fn baseline(id: &str, record: &vigil_fleet::Record, confirmed: bool) -> NodeEvent {
    NodeEvent {
        id: id.to_owned(),
        kind: NodeEventKind::SessionBaseline {
            record: record.clone(),
            confirmed,
            false_positive: false,
            disputed: None,
        },
    }
}

/// The labelled detections the store holds: reference → (label, when).
async fn labels(store: &vigil_controller::store::Store) -> Vec<(String, &'static str, u64)> {
    let (rows, _) = store.labelled_recent(0, 100).await.unwrap();
    let mut out: Vec<_> = rows
        .into_iter()
        .map(|l| (l.reference, l.label.as_str(), l.labelled_at))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_passed_step_up_labels_only_its_own_sessions_step_up_detections_once() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let store = vigil_controller::store::Store::open(&db.url())
            .await
            .unwrap();
        let e = engine();
        let t = now();
        let dana = record(&e, "s-dana", "dana", t - 5);
        let dana_id = SessionId(dana.0[..16].try_into().unwrap());
        let erin = record(&e, "s-erin", "erin", t - 5);
        let erin_id = SessionId(erin.0[..16].try_into().unwrap());
        let (dana_user, erin_user) = (user_of("dana"), user_of("erin"));
        c.events(vec![
            // Asked for a step-up a minute ago: what a pass labels.
            detection_by(
                "su-dana",
                dana_id,
                Some(dana_user),
                None,
                &[("asn_changed", 30)],
                t - 60,
            ),
            // Asked two hours ago: too long before to say it was this.
            detection_of(
                "su-dana-old",
                dana_id,
                None,
                &[("asn_changed", 30)],
                t - 7_200,
            ),
            // Blocked: nothing to pass on it.
            detection_of(
                "block-dana",
                dana_id,
                None,
                &[("device_changed", 70)],
                t - 30,
            ),
            // Another session's: Dana's pass says nothing of it.
            detection_by(
                "su-erin",
                erin_id,
                Some(erin_user),
                None,
                &[("asn_changed", 30)],
                t - 60,
            ),
        ])
        .await;
        // A sighting that is no pass (whoever was challenged may be the
        // thief, and went on without passing) labels nothing.
        c.events(vec![baseline("b-1", &dana, false)]).await;
        assert_eq!(labels(&store).await, []);
        // Dana passes: her one step-up detection of the hour is labelled.
        c.events(vec![baseline("b-2", &dana, true)]).await;
        let after = labels(&store).await;
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(
            (after[0].0.as_str(), after[0].1),
            ("su-dana", "step_up_passed")
        );
        // The same event again, and a second pass: nothing more, nothing
        // relabelled.
        let again = record(&e, "s-dana", "dana", t - 1);
        c.events(vec![
            baseline("b-2", &dana, true),
            baseline("b-3", &again, true),
        ])
        .await;
        assert_eq!(labels(&store).await, after);
        // A baseline confirmed by an operator's false positive (the node
        // moved the session to the refused request's device) is not the
        // user's word: Fay's step-up detection stays unlabelled.
        let fay = record(&e, "s-fay", "fay", t - 5);
        let fay_id = SessionId(fay.0[..16].try_into().unwrap());
        c.events(vec![
            detection_by(
                "su-fay",
                fay_id,
                Some(user_of("fay")),
                None,
                &[("asn_changed", 30)],
                t - 60,
            ),
            NodeEvent {
                id: "b-fay".to_owned(),
                kind: NodeEventKind::SessionBaseline {
                    record: fay.clone(),
                    confirmed: true,
                    false_positive: true,
                    disputed: None,
                },
            },
        ])
        .await;
        assert_eq!(labels(&store).await, after);
        // An operator's label stands above the user's word.
        c.admin(
            "/v1/admin/detections/confirmed-compromise",
            serde_json::json!({ "reference": "su-dana" }),
        )
        .await;
        let now_labels = labels(&store).await;
        assert_eq!(now_labels[0].1, "confirmed_compromise");
        // A copy of the store (backup, move to PostgreSQL) keeps the
        // user's label beside the operator's.
        c.events(vec![
            detection_by(
                "su-erin-2",
                erin_id,
                Some(erin_user),
                None,
                &[("asn_changed", 30)],
                now() - 1,
            ),
            baseline("b-4", &erin, true),
        ])
        .await;
        let held = labels(&store).await;
        assert_eq!(held.len(), 3, "{held:?}");
        let copy_dir = tempfile::tempdir().unwrap();
        let copy_url = format!("sqlite://{}", copy_dir.path().join("copy.db").display());
        let copied = vigil_controller::store::Store::open(&copy_url)
            .await
            .unwrap();
        vigil_controller::copy::copy(&store, &copied).await.unwrap();
        assert_eq!(labels(&copied).await, held);

        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

/// `record`'s baseline, confirmed or not, naming `disputed` as the block
/// its user said "it was me" to.
fn disputing(id: &str, record: &vigil_fleet::Record, confirmed: bool, disputed: &str) -> NodeEvent {
    NodeEvent {
        id: id.to_owned(),
        kind: NodeEventKind::SessionBaseline {
            record: record.clone(),
            confirmed,
            false_positive: false,
            disputed: Some(disputed.to_owned()),
        },
    }
}

#[tokio::test]
async fn it_was_me_labels_only_the_block_its_user_disputed() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let store = vigil_controller::store::Store::open(&db.url())
            .await
            .unwrap();
        let e = engine();
        let t = now();
        let gil = record(&e, "s-gil", "gil", t - 5);
        let gil_id = SessionId(gil.0[..16].try_into().unwrap());
        let hal = record(&e, "s-hal", "hal", t - 5);
        let hal_id = SessionId(hal.0[..16].try_into().unwrap());
        let block = |reference: &str, session: SessionId, user: &str, at: u64| {
            detection_by(
                reference,
                session,
                Some(user_of(user)),
                None,
                &[("device_changed", 70)],
                at,
            )
        };
        c.events(vec![
            block("block-gil", gil_id, "gil", t - 30),
            block("block-gil-2", gil_id, "gil", t - 20),
            block("block-gil-old", gil_id, "gil", t - 7_200),
            block("block-hal", hal_id, "hal", t - 30),
        ])
        .await;
        // Whoever was blocked may be the thief: saying so without passing
        // (a sighting, not confirmed) labels nothing.
        c.events(vec![disputing("d-1", &gil, false, "block-gil")])
            .await;
        assert_eq!(labels(&store).await, []);
        // Gil's pass naming another user's block, or a block of his older
        // than the hour: nothing labelled.
        c.events(vec![
            disputing("d-2", &gil, true, "block-hal"),
            disputing("d-3", &gil, true, "block-gil-old"),
        ])
        .await;
        assert_eq!(labels(&store).await, []);
        // Gil's pass naming his block: that one, and only that one.
        c.events(vec![disputing("d-4", &gil, true, "block-gil")])
            .await;
        let after = labels(&store).await;
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(
            (after[0].0.as_str(), after[0].1),
            ("block-gil", "step_up_passed")
        );
        // Said again: labelled once, at the first pass.
        c.events(vec![disputing("d-5", &gil, true, "block-gil")])
            .await;
        assert_eq!(labels(&store).await, after);
        // Hal's block is labelled only by Hal's own pass.
        c.events(vec![disputing("d-6", &hal, true, "block-hal")])
            .await;
        let both_labels = labels(&store).await;
        assert_eq!(
            both_labels
                .iter()
                .map(|(r, l, _)| (r.as_str(), *l))
                .collect::<Vec<_>>(),
            [
                ("block-gil", "step_up_passed"),
                ("block-hal", "step_up_passed")
            ]
        );

        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn what_nodes_send_is_escaped_on_the_precision_page() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let evil = "\"><img src=x onerror=alert(1)><script>alert(2)</script>";
        c.events(vec![detection("x-1", 1, Some(evil), &[(evil, 70)], now() - 60)])
            .await;
        c.admin("/v1/admin/detections/false-positive", serde_json::json!({ "reference": "x-1" }))
            .await;
        let cookie = c.sign_in().await;
        let r = no_redirect()
            .get(c.url("/dashboard/precision"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-security-policy"],
            "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        );
        let page = r.text().await.unwrap();
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<script>alert"), "{page}");
        // The rule is named, escaped; the unknown reason code is not:
        // it is counted as `(other)`.
        assert!(page.contains("<code>&#34;&#62;&#60;img src=x onerror=alert(1)&#62;&#60;script&#62;"), "{page}");
        assert!(page.contains("<code>(other)</code></td><td>0</td><td>1</td>"), "{page}");
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}

#[tokio::test]
async fn labelled_pages_walk_every_decision_once_across_equal_times() {
    both(async |postgres| {
        let db = Db::new(postgres).await;
        let c = Controller::start(&db.url()).await;
        let t = now() - 600;
        // Five at one second, one before, one after: pages of two must cut
        // inside the tie and still give each once, in order.
        let mut events: Vec<NodeEvent> = (1..=5)
            .map(|i| detection(&format!("tie-{i}"), i, None, &[("ip_changed", 10)], t))
            .collect();
        events.push(detection("before", 6, None, &[("ip_changed", 10)], t - 1));
        events.push(detection("after", 7, None, &[("ip_changed", 10)], t + 1));
        events.push(detection("unlabelled", 8, None, &[("ip_changed", 10)], t));
        c.events(events).await;
        for r in [
            "tie-3", "after", "tie-1", "tie-5", "before", "tie-2", "tie-4",
        ] {
            c.admin(
                "/v1/admin/detections/false-positive",
                serde_json::json!({ "reference": r }),
            )
            .await;
        }
        let store = vigil_controller::store::Store::open(&db.url())
            .await
            .unwrap();
        let mut cursor = None;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let (page, next) = store
                .labelled_page(t - 1, t + 2, cursor.as_ref(), 2)
                .await
                .unwrap();
            pages += 1;
            assert!(pages <= 5, "the walk ends");
            seen.extend(page.iter().map(|l| l.reference.clone()));
            if page.len() < 2 {
                break;
            }
            cursor = next;
        }
        assert_eq!(
            seen,
            [
                "before", "tie-1", "tie-2", "tie-3", "tie-4", "tie-5", "after"
            ]
        );
        // The period's bounds: from `since`, before `until`.
        let (page, _) = store.labelled_page(t, t + 1, None, 100).await.unwrap();
        assert_eq!(page.len(), 5);
        c.stop().await;
        db.drop_db().await;
    })
    .await;
}
