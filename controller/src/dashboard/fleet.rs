//! What this controller process has seen of each node, for the
//! dashboard's fleet health: when it last posted events, when it last
//! opened a sync stream, how many of its streams are open, and how far
//! behind the log's head they are. Kept in memory by each replica: a node
//! streaming from another replica shows here as not streaming.

use std::collections::HashMap;
use std::sync::Mutex;

/// One node as seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSeen {
    /// When it last posted events (seconds since the Unix epoch; 0: not
    /// since this process started).
    pub last_events: u64,
    /// When it last opened a sync stream (0: never).
    pub last_sync: u64,
    /// Its sync streams open now.
    pub streams: u32,
    /// The last change sent on its streams.
    pub cursor: u64,
}

/// Every configured node's [`NodeSeen`], by name. Only configured names
/// are ever entries: the map is as bounded as the config.
#[derive(Debug, Default)]
pub struct Fleet(Mutex<HashMap<String, NodeSeen>>);

// === impl Fleet ===

impl Fleet {
    fn with(&self, node: &str, f: impl FnOnce(&mut NodeSeen)) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(node) {
            Some(seen) => f(seen),
            None => f(map.entry(node.to_owned()).or_default()),
        }
    }

    /// `node` posted events at `now`.
    pub fn events(&self, node: &str, now: u64) {
        self.with(node, |s| s.last_events = now);
    }

    /// `node` opened a sync stream at `now`.
    pub fn opened(&self, node: &str, now: u64) {
        self.with(node, |s| {
            s.last_sync = now;
            s.streams = s.streams.saturating_add(1);
        });
    }

    /// A sync stream of `node` ended.
    pub fn closed(&self, node: &str) {
        self.with(node, |s| s.streams = s.streams.saturating_sub(1));
    }

    /// A stream of `node` has sent up to `cursor`.
    pub fn sent(&self, node: &str, cursor: u64) {
        self.with(node, |s| s.cursor = s.cursor.max(cursor));
    }

    /// What was seen of `node`.
    pub fn get(&self, node: &str) -> NodeSeen {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(node)
            .copied()
            .unwrap_or_default()
    }
}
