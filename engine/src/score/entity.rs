//! Entity risk: the user across sessions — revoked everywhere, reported by
//! a partner, or caught on another session recently — and the flags kept
//! for it, only for users that have some.

use std::time::Duration;

use super::{
    Contribution, LAST_SEEN_GRANULARITY, Reason, Revocation, Risk, Scorer, UserKey, secs32,
};

/// What the user-level flags say; kept only for users that have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct EntityState {
    /// How many times the user was revoked: a session bound to the user
    /// under an older count is ended.
    pub(super) generation: u16,
    reported_points: u8,
    reported_until: u32,
    detections: u8,
    detections_until: u32,
    /// Every session of the user first seen at or before this time (Unix
    /// seconds; 0: none) must pass a step-up at or after it
    /// ([`Scorer::require_step_up`]).
    step_up_at: u32,
}

/// Other-session detections counted toward entity risk.
const MAX_DETECTIONS: u8 = 3;

/// What the entity risk needs of the session judged.
#[derive(Debug, Clone, Copy)]
pub(super) struct SessionClock {
    /// The user's revocation count when the session was bound.
    pub(super) generation: u16,
    /// When the session was first seen (Unix seconds).
    pub(super) first_seen: u32,
    /// When its user last passed a step-up on it (0: never).
    pub(super) stepped_up_at: u32,
}

// === impl EntityState ===

impl EntityState {
    pub(super) const RECORD_LEN: usize = 16;
    /// The previous release's records, without the step-up time: still
    /// restored from its snapshots.
    pub(super) const RECORD_LEN_V1: usize = 12;

    pub(super) fn encode(&self) -> [u8; Self::RECORD_LEN] {
        let mut out = [0u8; Self::RECORD_LEN];
        out[..2].copy_from_slice(&self.generation.to_le_bytes());
        out[2] = self.reported_points;
        out[3] = self.detections;
        out[4..8].copy_from_slice(&self.reported_until.to_le_bytes());
        out[8..12].copy_from_slice(&self.detections_until.to_le_bytes());
        out[12..].copy_from_slice(&self.step_up_at.to_le_bytes());
        out
    }

    /// Reads a record of [`Self::RECORD_LEN`] bytes, or of
    /// [`Self::RECORD_LEN_V1`] (no step-up asked).
    pub(super) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::RECORD_LEN && b.len() != Self::RECORD_LEN_V1 {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Self {
            generation: u16::from_le_bytes([b[0], b[1]]),
            reported_points: b[2].min(100),
            detections: b[3].min(MAX_DETECTIONS),
            reported_until: u32_at(4),
            detections_until: u32_at(8),
            step_up_at: if b.len() == Self::RECORD_LEN {
                u32_at(12)
            } else {
                0
            },
        })
    }
}

// === impl Scorer ===

impl Scorer {
    /// The user's flags, for a session bound to them under revocation
    /// `generation`, first seen at `first_seen`, whose user last passed a
    /// step-up on it at `stepped_up_at` (0: never).
    pub(super) fn entity_risk(&self, user: UserKey, session: SessionClock, now: u32) -> Risk {
        let SessionClock {
            generation,
            first_seen,
            stepped_up_at,
        } = session;
        let config = self.config.load();
        // Most users have no flags: `contains_key` answers without logging
        // a read (see `score`).
        let Some(e) = self
            .entities
            .contains_key(&user)
            .then(|| self.entities.get(&user))
            .flatten()
        else {
            return Risk::none();
        };
        let mut reasons = Vec::new();
        if e.generation > generation {
            reasons.push(Contribution {
                reason: Reason::UserRevoked,
                points: 100,
            });
        }
        // A step-up passed in the same second as the ask counts as after
        // it: seconds are all either clock has, and a user who has just
        // signed in must not be sent back for it.
        if e.step_up_at != 0 && first_seen <= e.step_up_at && stepped_up_at < e.step_up_at {
            reasons.push(Contribution {
                reason: Reason::StepUpRequired,
                points: 0,
            });
        }
        if e.reported_until > now && e.reported_points > 0 {
            reasons.push(Contribution {
                reason: Reason::PartnerReported,
                points: e.reported_points,
            });
        }
        if e.detections_until > now && e.detections > 0 {
            let n = e.detections.min(MAX_DETECTIONS);
            reasons.push(Contribution {
                reason: Reason::RecentDetections,
                points: config.recent_detection.saturating_mul(n),
            });
        }
        Risk::from_contributions(&config, reasons)
    }

    pub(super) fn clear_detections(&self, user: UserKey) {
        if let Some(mut e) = self.entities.get(&user)
            && e.detections > 0
        {
            e.detections = 0;
            e.detections_until = 0;
            self.entities.insert(user, e);
        }
    }

    pub(super) fn record_detection(&self, user: UserKey, now: u32) {
        let window = secs32(self.config.load().detection_window.as_secs());
        let mut e = self.entities.get(&user).unwrap_or_default();
        let until = now.saturating_add(window);
        // A replay loop would otherwise write on every request: once the
        // count is full and the window fresh, there is nothing to add.
        if e.detections >= MAX_DETECTIONS
            && e.detections_until > now
            && until.saturating_sub(e.detections_until) < LAST_SEEN_GRANULARITY
        {
            return;
        }
        e.detections = if e.detections_until > now {
            e.detections.saturating_add(1).min(MAX_DETECTIONS)
        } else {
            1
        };
        e.detections_until = until;
        self.entities.insert(user, e);
    }

    /// Ends every session bound to `user` so far (universal logout): their
    /// later requests score [`Reason::UserRevoked`]. Sessions bound to the
    /// user afterwards (the user signed in again) are not affected: each
    /// binding records how many revocations the user had had.
    /// Returns how many sessions were ended on this node.
    pub fn revoke_user(&self, user: UserKey, now_secs: u64) -> u64 {
        // Each session bound to the user is revoked outright, so that the
        // revocation holds even if its state is later evicted; the count
        // covers sessions bound while the scan runs.
        let keys = self.sessions.keys_where(|s| s.user == Some(user));
        let ended = keys.len() as u64;
        for key in keys {
            self.revoked.insert(
                key,
                Revocation {
                    at: now_secs,
                    by_user: Some(user),
                },
            );
            self.sessions.remove(&key);
        }
        let mut e = self.entities.get(&user).unwrap_or_default();
        e.generation = e.generation.saturating_add(1);
        self.entities.insert(user, e);
        ended
    }

    /// The fleet's count of the user's recent detections (every node's,
    /// counted at the controller), recent until `until_secs`: taken here
    /// when higher than this node's own, so that a thief caught on another
    /// node raises the user's entity risk ([`Reason::RecentDetections`])
    /// on this one. The fleet's count includes this node's, so it is a
    /// maximum, never a sum.
    ///
    /// A count of 0 is the fleet's clear: the user passed a step-up on
    /// another node, and their detections count from zero here too.
    pub fn fleet_detections(&self, user: UserKey, count: u8, until_secs: u64, now_secs: u64) {
        let now = secs32(now_secs);
        let until = secs32(until_secs);
        if count == 0 {
            self.clear_detections(user);
            return;
        }
        if until <= now {
            return;
        }
        let mut e = self.entities.get(&user).unwrap_or_default();
        let held = if e.detections_until > now {
            e.detections
        } else {
            0
        };
        let count = count.min(MAX_DETECTIONS);
        if held >= count && e.detections_until >= until {
            return;
        }
        e.detections = held.max(count);
        e.detections_until = e.detections_until.max(until);
        self.entities.insert(user, e);
    }

    /// Forgets `user` on this node (erasure of a person's data): every
    /// session bound to them is ended — revoked by its key alone, no
    /// longer linked to them, as are their sessions revoked before — and
    /// their profile and flags are dropped. Returns how many sessions were
    /// ended.
    pub fn erase_user(&self, user: UserKey, now_secs: u64) -> u64 {
        let keys = self.sessions.keys_where(|s| s.user == Some(user));
        for key in &keys {
            self.minted.invalidate(key);
            self.revoked.insert(
                *key,
                Revocation {
                    at: now_secs,
                    by_user: None,
                },
            );
            self.sessions.remove(key);
        }
        for (key, revocation) in self.revoked.iter() {
            if revocation.by_user == Some(user) {
                self.revoked.insert(
                    *key,
                    Revocation {
                        by_user: None,
                        ..revocation
                    },
                );
            }
        }
        self.profiles.invalidate(&user);
        self.entities.invalidate(&user);
        keys.len() as u64
    }

    /// Every session of `user` first seen at or before `at_secs` must pass
    /// a step-up at its next request, unless it passed one at or after
    /// `at_secs`: its requests score [`Reason::StepUpRequired`], which
    /// makes the decision at least `step_up` whatever the policy or rules
    /// say, until the session's user passes one on it. Sessions this node
    /// learns later are judged the same way (the check is made at each
    /// request from the session's own first sighting and step-up time).
    /// Only the latest ask is kept; an earlier one than held changes
    /// nothing.
    pub fn require_step_up(&self, user: UserKey, at_secs: u64) {
        let at = secs32(at_secs).max(1);
        let mut e = self.entities.get(&user).unwrap_or_default();
        if e.step_up_at >= at {
            return;
        }
        e.step_up_at = at;
        self.entities.insert(user, e);
    }

    /// A partner reported the user at risk: `points` of entity risk
    /// ([`Reason::PartnerReported`]) on every session of theirs for `ttl`.
    pub fn report_user(&self, user: UserKey, points: u8, ttl: Duration, now_secs: u64) {
        let mut e = self.entities.get(&user).unwrap_or_default();
        e.reported_points = points.min(100);
        e.reported_until = secs32(now_secs.saturating_add(ttl.as_secs()));
        self.entities.insert(user, e);
    }
}
