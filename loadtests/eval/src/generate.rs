//! The generator: a seeded synthetic world of users, their devices and
//! networks, a warm-up history and labelled scenario sessions.
//!
//! Everything is drawn from one [`Rng`] seeded with
//! [`GenerateConfig::seed`], in a fixed order, so that a seed gives the same
//! corpus byte for byte. The modelling choices are written down in
//! `docs/evaluation.md`; the comments here say where each number comes from.

mod device;
mod world;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::scenario::{Actor, Corpus, Event, NetworkPlan, Scenario};

use device::{Device, Fingerprint, Tool, pick};
use world::{COUNTRIES, World, distance_km, user_countries};

/// The generator's random number generator: xoshiro256++, a specified
/// algorithm, so that a seed means the same stream on every platform.
pub(crate) type Rng = rand::rngs::Xoshiro256PlusPlus;

/// Monday, January 6, 2025, 00:00 UTC: the default start of the history.
pub const DEFAULT_START: u64 = 1_736_121_600;

const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;
const MINUTE: u64 = 60;
/// Days a scenario slot lasts; a scenario takes one or more ([`span`]).
const SLOT_DAYS: u64 = 2;

/// The generator's settings on a command line, shared by `vigil-corpus`
/// and `vigil-eval --generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Seed of every random draw: a seed gives the same corpus.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of users.
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// Sessions of each scenario class other than the history.
    #[arg(long, default_value_t = 1000)]
    pub sessions_per_class: usize,
    /// Days of ordinary history before the scenarios.
    #[arg(long, default_value_t = 14)]
    pub history_days: u64,
    /// Start of the history (Unix seconds, 00:00 UTC of a Monday).
    #[arg(long, default_value_t = DEFAULT_START)]
    pub start: u64,
}

impl GenerateArgs {
    /// The generator's config.
    pub fn config(&self) -> GenerateConfig {
        GenerateConfig {
            seed: self.seed,
            users: self.users,
            sessions_per_class: self.sessions_per_class,
            history_days: self.history_days,
            start: self.start,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerateConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Number of users.
    pub users: usize,
    /// Sessions of each scenario class other than `history`.
    pub sessions_per_class: usize,
    /// Days of warm-up history before the scenarios. Default 14.
    pub history_days: u64,
    /// Start of the history, seconds since the Unix epoch, at 00:00 UTC of
    /// a Monday. Default [`DEFAULT_START`].
    pub start: u64,
}

/// What the generator made, beside the corpus: counts and the facts the docs
/// quote.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Sessions per class.
    pub sessions: BTreeMap<String, usize>,
    /// Requests per class.
    pub requests: BTreeMap<String, usize>,
    /// Classes that got fewer sessions than asked, for want of eligible
    /// users (e.g. too few users behind the proxy), with the shortfall.
    pub shortfall: BTreeMap<String, usize>,
    /// Users, and how many of them go through the proxy, work on a campus
    /// or in an office.
    pub users: usize,
    /// Users whose managed laptop goes through the proxy.
    pub zscaler_users: usize,
    /// Users at a campus (one shared address).
    pub campus_users: usize,
    /// Users with an office.
    pub office_users: usize,
    /// Attacker devices drawn for `replay_same_ip_other_device`, and how many
    /// were redrawn because they matched the victim's in every observable
    /// trait.
    pub same_ip_device_draws: usize,
    /// See `same_ip_device_draws`.
    pub same_ip_device_rejected: usize,
    /// Fastest effective speed between the last request before a flight and
    /// the first after it, km/h.
    pub max_flight_speed_kmh: f64,
    /// Largest number of users with a session behind one shared address
    /// on one day in `shared_nat`.
    pub max_nat_group: usize,
}

/// Which of a user's devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Desktop,
    Phone,
}

/// A user of the world.
#[derive(Debug, Clone)]
struct User {
    id: String,
    country: usize,
    city: usize,
    home_net: usize,
    home_ip: Ipv4Addr,
    carrier: usize,
    /// Office or campus site.
    office: Option<usize>,
    /// The managed laptop goes through the proxy.
    zscaler: bool,
    desktop: Option<Device>,
    phone: Option<Device>,
    /// Days after a release before this user's browsers update.
    update_lag_days: u64,
}

/// Where a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Home,
    Office,
    Cellular,
}

/// How a stretch of requests reaches Vigil.
#[derive(Debug, Clone)]
struct Link {
    client: Client,
    /// Egress nodes of the proxy when the device goes through it.
    via: Option<Vec<Ipv4Addr>>,
    last_egress: Option<Ipv4Addr>,
    /// The network the client address is in (for "another ASN" draws).
    net: usize,
    /// At the user's office or campus.
    at_office: bool,
}

#[derive(Debug, Clone)]
enum Client {
    /// One address for the whole stretch.
    Fixed(Ipv4Addr),
    /// A NAT pool: each connection may leave from another address.
    Pool(Vec<Ipv4Addr>),
    /// A carrier-grade NAT: the address changes every so often.
    Cgnat { ip: Ipv4Addr, since: Option<u64> },
    /// A rotating proxy: a new address of the network per request.
    Rotating,
}

/// Appends the requests of one session.
struct Session {
    id: String,
    user: String,
    scenario: Scenario,
    bind: bool,
    bound: bool,
    /// Requests, in the order sent.
    events: Vec<Event>,
}

struct Gen<'a> {
    cfg: &'a GenerateConfig,
    rng: Rng,
    world: World,
    users: Vec<User>,
    events: Vec<Event>,
    stats: Stats,
}

// === impl GenerateConfig ===

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            users: 2_000,
            sessions_per_class: 1_000,
            history_days: 14,
            start: DEFAULT_START,
        }
    }
}

/// Generates a corpus. Deterministic in `cfg`.
pub fn generate(cfg: &GenerateConfig) -> (Corpus, Stats) {
    let mut rng = Rng::seed_from_u64(cfg.seed);
    let world = World::build(&mut rng, cfg.users);
    let mut g = Gen {
        cfg,
        rng,
        world,
        users: Vec::new(),
        events: Vec::new(),
        stats: Stats::default(),
    };
    g.make_users();
    let plan = g.assign_scenarios();
    for u in 0..g.users.len() {
        g.history(u);
    }
    // Each user's first slot after their other scenarios, for the clones.
    let mut next_free: Vec<usize> = plan
        .iter()
        .map(|slots| slots.iter().map(|(s, c)| s + span(*c)).max().unwrap_or(0))
        .collect();
    for (u, slots) in plan.into_iter().enumerate() {
        for (slot, scenario) in slots {
            let day = cfg.history_days + slot as u64 * SLOT_DAYS;
            g.scenario(u, scenario, day);
        }
    }
    g.clones(&mut next_free);
    g.lost_rotations(&mut next_free);
    // Stable: events of one session keep their order on equal times.
    g.events.sort_by_key(|e| e.t);
    let mut stats = g.stats;
    stats.users = g.users.len();
    let manifest = serde_json::json!({
        "format": 1,
        "generator": concat!("vigil-eval ", env!("CARGO_PKG_VERSION")),
        "config": cfg,
        "stats": stats,
    });
    let corpus = Corpus {
        networks: NetworkPlan {
            networks: g.world.networks,
        },
        events: g.events,
        manifest: Some(manifest),
    };
    (corpus, stats)
}

// === impl Gen: users and schedule ===

impl Gen<'_> {
    fn make_users(&mut self) {
        let countries = user_countries();
        let weights: Vec<(usize, u32)> = countries
            .iter()
            .map(|c| (*c, COUNTRIES[*c].user_weight))
            .collect();
        for i in 0..self.cfg.users {
            let rng = &mut self.rng;
            let country = pick(rng, &weights);
            let c = &COUNTRIES[country];
            let mut city = rng.random_range(0..c.cities.len());
            let lang = pick(rng, c.languages).to_owned();
            let mut office = None;
            let mut zscaler = false;
            let campus = self.world.campuses[country].first().copied();
            let r: f64 = rng.random();
            if let (Some(site), true) = (campus, r < 0.12) {
                office = Some(site);
            } else if r < 0.82 {
                let offices: Vec<usize> = (0..self.world.sites.len())
                    .filter(|s| {
                        let site = &self.world.sites[*s];
                        site.country == country && site.company.is_some()
                    })
                    .collect();
                if let Some(site) = offices.choose(rng).copied() {
                    // A tenth of employees work remotely, without an office.
                    if rng.random_bool(0.9) {
                        office = Some(site);
                    }
                    if let Some(company) = self.world.sites[site].company {
                        zscaler = self.world.companies[company].zscaler;
                    }
                }
            }
            if let Some(site) = office {
                city = self.world.sites[site].city;
            }
            let home_net = *self.world.residential[country][city]
                .choose(rng)
                .unwrap_or(&0);
            let home_ip = self.world.random_ip(rng, home_net);
            let carrier = *self.world.mobile[country].choose(rng).unwrap_or(&0);
            let employed = office.is_some() || zscaler;
            let has_desktop = rng.random_bool(if employed { 0.97 } else { 0.8 });
            let has_phone = !has_desktop || rng.random_bool(0.85);
            let desktop = has_desktop.then(|| Device::desktop(rng, c.mac_percent, &lang));
            let phone = has_phone.then(|| Device::phone(rng, c.ios_percent, &lang));
            // Staged roll-outs and restarts: most update within days.
            let lag: f64 = rng.random();
            let update_lag_days = secs(lag * lag * 10.0);
            self.stats.zscaler_users += usize::from(zscaler && has_desktop);
            match office.map(|s| self.world.sites[s].company.is_some()) {
                Some(true) => self.stats.office_users += 1,
                Some(false) => self.stats.campus_users += 1,
                None => {}
            }
            self.users.push(User {
                id: format!("u{i:05}"),
                country,
                city,
                home_net,
                home_ip,
                carrier,
                office,
                zscaler,
                desktop,
                phone,
                update_lag_days,
            });
        }
    }

    /// Gives each scenario session a user and a slot. Each user has slots of
    /// two days after the history; a user is in at most one scenario at a
    /// time, so no user is ever in two places because two scenarios
    /// overlapped.
    fn assign_scenarios(&mut self) -> Vec<Vec<(usize, Scenario)>> {
        let n_users = self.users.len();
        let mut busy: Vec<Vec<bool>> = vec![Vec::new(); n_users];
        let mut plan: Vec<Vec<(usize, Scenario)>> = vec![Vec::new(); n_users];
        let n = self.cfg.sessions_per_class;

        // Shared NAT first: whole groups of a site on one day.
        let mut by_site: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (u, user) in self.users.iter().enumerate() {
            if let Some(site) = user.office
                && self.world.sites[site].pool.len() == 1
            {
                by_site.entry(site).or_default().push(u);
            }
        }
        by_site.retain(|_, users| users.len() >= 8);
        let mut made = 0;
        let mut round = 0usize;
        while made < n && !by_site.is_empty() && round < 64 {
            for users in by_site.values() {
                let mut group = 0;
                for u in users {
                    if made >= n || group >= 60 {
                        break;
                    }
                    if take(&mut busy[*u], round, 1) {
                        plan[*u].push((round, Scenario::SharedNat));
                        made += 1;
                        group += 1;
                    }
                }
                self.stats.max_nat_group = self.stats.max_nat_group.max(group);
            }
            round += 1;
        }
        self.shortfall(Scenario::SharedNat, n - made);

        // The perfect clones and the lost rotations are assigned apart
        // ([`Gen::clones`], [`Gen::lost_rotations`]), so that adding them
        // changed no draw of the other classes.
        let classes: Vec<Scenario> = Scenario::ALL
            .into_iter()
            .filter(|s| !matches!(s, Scenario::History | Scenario::SharedNat))
            .filter(|s| !Scenario::CLONES.contains(s) && *s != Scenario::RotationLost)
            .collect();
        let eligible: Vec<Vec<usize>> = classes
            .iter()
            .map(|s| (0..n_users).filter(|u| self.eligible(*u, *s)).collect())
            .collect();
        // Major updates that still exist per user (Safari 17 has one).
        let mut majors_left: Vec<u32> = self
            .users
            .iter()
            .map(|user| {
                [&user.desktop, &user.phone]
                    .into_iter()
                    .flatten()
                    .map(Device::major_updates_left)
                    .sum()
            })
            .collect();
        // Round robin over classes so that no class gets only late slots.
        let mut made = vec![0; classes.len()];
        for _ in 0..n {
            for (k, class) in classes.iter().enumerate() {
                let users = &eligible[k];
                if users.is_empty() {
                    continue;
                }
                let span = span(*class);
                // The least busy of a few random eligible users.
                let mut best: Option<(usize, usize)> = None;
                for _ in 0..6 {
                    let Some(u) = users.choose(&mut self.rng).copied() else {
                        continue;
                    };
                    if *class == Scenario::UpgradeMajor && majors_left[u] == 0 {
                        continue;
                    }
                    let slot = first_free(&busy[u], span);
                    if best.is_none_or(|(s, _)| slot < s) {
                        best = Some((slot, u));
                    }
                }
                if let Some((slot, u)) = best
                    && take(&mut busy[u], slot, span)
                {
                    plan[u].push((slot, *class));
                    made[k] += 1;
                    if *class == Scenario::UpgradeMajor {
                        majors_left[u] = majors_left[u].saturating_sub(1);
                    }
                }
            }
        }
        for (k, class) in classes.iter().enumerate() {
            self.shortfall(*class, n - made[k]);
        }
        for slots in &mut plan {
            slots.sort();
        }
        plan
    }

    fn shortfall(&mut self, class: Scenario, missing: usize) {
        if missing > 0 {
            self.stats
                .shortfall
                .insert(class.as_str().to_owned(), missing);
        }
    }

    fn eligible(&self, u: usize, class: Scenario) -> bool {
        let user = &self.users[u];
        match class {
            Scenario::Zscaler => user.zscaler && user.desktop.is_some(),
            Scenario::UpgradeMajor => [&user.desktop, &user.phone]
                .into_iter()
                .flatten()
                .any(Device::can_update_major),
            _ => true,
        }
    }
}

/// Slots a scenario occupies: every request of it, the owner's and the
/// attacker's, falls inside them. A flight: the trip, a stay and an
/// unobserved way back; an idle gap runs up to 30 hours past its first day;
/// a replay by infostealer comes up to 48 hours after the owner, who may come
/// back a day after that.
fn span(class: Scenario) -> usize {
    match class {
        Scenario::Flight
        | Scenario::ReplayOtherCountry
        | Scenario::ReplaySameCountryOtherAsn
        | Scenario::ReplaySameIpOtherDevice
        | Scenario::ReplayCopiedUaOtherTls
        | Scenario::ReplayImpersonatedJa4OtherNetwork
        | Scenario::CloneSameIp
        | Scenario::CloneSameIsp
        | Scenario::CloneThiefFirst => 3,
        Scenario::IdleGap => 2,
        _ => 1,
    }
}

/// Marks `span` slots from `slot` busy if they are free.
fn take(busy: &mut Vec<bool>, slot: usize, span: usize) -> bool {
    let end = slot + span;
    if busy.len() < end {
        busy.resize(end, false);
    }
    if busy[slot..end].iter().any(|b| *b) {
        return false;
    }
    busy[slot..end].fill(true);
    true
}

/// The first slot from which `span` slots are free.
fn first_free(busy: &[bool], span: usize) -> usize {
    (0..)
        .find(|s| (*s..s + span).all(|i| !busy.get(i).copied().unwrap_or(false)))
        .unwrap_or(busy.len())
}

/// Whole seconds of a non-negative duration in seconds (or hours times
/// 3600), rounded down; negative values give 0.
#[allow(
    clippy::cast_possible_truncation,
    reason = "durations of days at most: far inside u64"
)]
fn secs(x: f64) -> u64 {
    x.max(0.0) as u64
}

// === impl Gen: building blocks ===

impl Gen<'_> {
    /// `hour` (local, may exceed 24) of day `day` of the corpus, for user
    /// `u`, as Unix seconds.
    fn local(&self, u: usize, day: u64, hour: f64) -> u64 {
        let user = &self.users[u];
        let offset = COUNTRIES[user.country].cities[user.city].utc_minutes;
        let local = self.cfg.start + day * DAY + secs(hour * 3600.0);
        local.saturating_add_signed(-offset * 60)
    }

    fn new_session(&mut self, u: usize, scenario: Scenario) -> Session {
        let id = format!("{:032x}", self.rng.random::<u128>());
        Session {
            id,
            user: self.users[u].id.clone(),
            scenario,
            // The app names the user at login for most sessions; the rest
            // (sessions opened before Vigil, apps without the header) get
            // session risk only.
            bind: self.rng.random_bool(0.95),
            bound: false,
            events: Vec::new(),
        }
    }

    fn finish(&mut self, session: Session) {
        let name = session.scenario.as_str().to_owned();
        *self.stats.sessions.entry(name.clone()).or_default() += 1;
        *self.stats.requests.entry(name).or_default() += session.events.len();
        self.events.extend(session.events);
    }

    fn device(&self, u: usize, slot: Slot) -> Option<&Device> {
        match slot {
            Slot::Desktop => self.users[u].desktop.as_ref(),
            Slot::Phone => self.users[u].phone.as_ref(),
        }
    }

    fn device_mut(&mut self, u: usize, slot: Slot) -> Option<&mut Device> {
        match slot {
            Slot::Desktop => self.users[u].desktop.as_mut(),
            Slot::Phone => self.users[u].phone.as_mut(),
        }
    }

    /// What device `slot` of user `u` sends. Every user has a device in
    /// the slots [`Gen::pick_slot`] and the eligibility rules hand out; the
    /// other device stands in otherwise.
    fn fingerprint(&self, u: usize, slot: Slot) -> Fingerprint {
        let other = match slot {
            Slot::Desktop => Slot::Phone,
            Slot::Phone => Slot::Desktop,
        };
        self.device(u, slot)
            .or_else(|| self.device(u, other))
            .map(Device::fingerprint)
            .unwrap_or_else(|| Device::fallback().fingerprint())
    }

    /// One of the user's devices; `prefer_phone` is the chance of the phone
    /// when there are both.
    fn pick_slot(&mut self, u: usize, prefer_phone: f64) -> Slot {
        let user = &self.users[u];
        match (user.desktop.is_some(), user.phone.is_some()) {
            (true, true) => {
                if self.rng.random_bool(prefer_phone) {
                    Slot::Phone
                } else {
                    Slot::Desktop
                }
            }
            (true, false) => Slot::Desktop,
            _ => Slot::Phone,
        }
    }

    /// The link of user `u`'s device `slot` at `place`. Managed laptops of
    /// proxy customers go through the proxy from anywhere.
    fn link(&mut self, u: usize, slot: Slot, place: Place) -> Link {
        let user = &self.users[u];
        let (client, net) = match (place, user.office) {
            (Place::Office, Some(site)) => {
                let site = &self.world.sites[site];
                (Client::Pool(site.pool.clone()), site.net)
            }
            (Place::Cellular, _) => {
                let ip = self.world.cgnat_ip(&mut self.rng, user.carrier);
                (Client::Cgnat { ip, since: None }, user.carrier)
            }
            _ => (Client::Fixed(user.home_ip), user.home_net),
        };
        let via = (slot == Slot::Desktop && user.zscaler).then(|| {
            let (country, city) = (user.country, user.city);
            let c = &COUNTRIES[country].cities[city];
            self.world.pop_nodes(&mut self.rng, (c.lat, c.lon), None)
        });
        // The proxy's client holds one long-lived tunnel: the office NAT
        // maps it to one address of its pool for the whole stretch.
        let client = match (client, &via) {
            (Client::Pool(pool), Some(_)) => {
                Client::Fixed(*pool.choose(&mut self.rng).unwrap_or(&Ipv4Addr::UNSPECIFIED))
            }
            (client, _) => client,
        };
        Link {
            client,
            via,
            last_egress: None,
            net,
            at_office: place == Place::Office && user.office.is_some(),
        }
    }

    /// The places user `u` can be with device `slot` on an ordinary day.
    fn own_places(&self, u: usize) -> Vec<Place> {
        let mut places = vec![Place::Home, Place::Cellular];
        if self.users[u].office.is_some() {
            places.push(Place::Office);
        }
        places
    }

    /// Sends `n` requests from `start`, 10 s to 10 min apart (log-uniform:
    /// mostly clicks, sometimes a pause), and returns the time of the last.
    #[allow(clippy::too_many_arguments, reason = "one burst's facts")]
    fn burst(
        &mut self,
        s: &mut Session,
        start: u64,
        n: usize,
        actor: Actor,
        fp: &Fingerprint,
        link: &mut Link,
        gaps: (f64, f64),
    ) -> u64 {
        let mut t = start;
        for i in 0..n {
            if i > 0 {
                t += log_uniform(&mut self.rng, gaps.0, gaps.1);
            }
            self.send(s, t, actor, fp, link, None);
        }
        t
    }

    fn send(
        &mut self,
        s: &mut Session,
        t: u64,
        actor: Actor,
        fp: &Fingerprint,
        link: &mut Link,
        note: Option<String>,
    ) {
        let (peer, xff) = link.point(&self.world, &mut self.rng, t);
        let bind = actor == Actor::Owner && s.bind && !s.bound;
        s.bound |= bind;
        s.events.push(Event {
            t,
            session: s.id.clone(),
            user: s.user.clone(),
            scenario: s.scenario,
            label: s.scenario.label(),
            actor,
            bind,
            peer,
            xff,
            ua: fp.ua.clone(),
            accept_language: fp.accept_language.clone(),
            ch_platform: fp.ch_platform.clone(),
            ch_mobile: fp.ch_mobile.clone(),
            ch_ua: fp.ch_ua.clone(),
            fetch_metadata: fp.fetch_metadata,
            ja4: fp.ja4.clone(),
            steal: false,
            lose_rotation: false,
            note,
        });
    }

    fn count(&mut self, lo: usize, hi: usize) -> usize {
        self.rng.random_range(lo..=hi)
    }

    fn hours(&mut self, lo: f64, hi: f64) -> f64 {
        self.rng.random_range(lo..hi)
    }
}

/// A gap in whole seconds, log-uniform in `[lo, hi)` seconds.
fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> u64 {
    let x: f64 = rng.random_range(lo.ln()..hi.ln());
    secs(x.exp().round())
}

/// Ordinary clicking: 10 s to 10 min.
const CLICKS: (f64, f64) = (10.0, 600.0);

// === impl Gen: history ===

/// Browser releases inside the history window: (day, kind test, new major).
fn release_of(device: &Device) -> Option<(u64, u16)> {
    use device::Kind::*;
    match device.kind {
        ChromeWindows | ChromeMac | ChromeLinux | ChromeOs | ChromeAndroid => Some((8, 132)),
        EdgeWindows | EdgeMac => Some((10, 132)),
        FirefoxWindows | FirefoxMac | FirefoxLinux if !device.esr => Some((1, 134)),
        _ => None,
    }
}

impl Gen<'_> {
    /// Ordinary days: a work session on the laptop on most workdays (at the
    /// office, or at home on remote days), phone sessions most evenings,
    /// now and then on the laptop at weekends. A new login each day. The home
    /// address is sometimes reassigned by the ISP overnight; browsers take
    /// the January releases (Firefox 134 on day 1, Chrome 132 on day 8, Edge
    /// 132 on day 10) a few days after they ship, on a restart between
    /// sessions.
    fn history(&mut self, u: usize) {
        for day in 0..self.cfg.history_days {
            if self.rng.random_bool(0.04) {
                let net = self.users[u].home_net;
                self.users[u].home_ip = self.world.random_ip(&mut self.rng, net);
            }
            let lag = self.users[u].update_lag_days;
            for slot in [Slot::Desktop, Slot::Phone] {
                if let Some(d) = self.device_mut(u, slot)
                    && let Some((release, major)) = release_of(d)
                    && day >= release + lag
                    && d.major + 1 == major
                {
                    d.update_major();
                }
            }
            let workday = day % 7 < 5;
            let user = &self.users[u];
            let has_desktop = user.desktop.is_some();
            let has_phone = user.phone.is_some();
            let has_office = user.office.is_some();
            if has_desktop {
                let go = if workday { 0.85 } else { 0.25 };
                if self.rng.random_bool(go) {
                    let place = if workday && has_office && self.rng.random_bool(0.7) {
                        Place::Office
                    } else {
                        Place::Home
                    };
                    let hour = if workday {
                        self.hours(8.0, 10.5)
                    } else {
                        self.hours(10.0, 21.0)
                    };
                    let n = if workday {
                        self.count(5, 40)
                    } else {
                        self.count(3, 15)
                    };
                    self.ordinary(u, Slot::Desktop, place, day, hour, n);
                }
            }
            if has_phone {
                let go = if has_desktop { 0.6 } else { 0.85 };
                if self.rng.random_bool(go) {
                    let (place, hour) = if self.rng.random_bool(0.8) {
                        let place = if self.rng.random_bool(0.7) {
                            Place::Home
                        } else {
                            Place::Cellular
                        };
                        (place, self.hours(18.0, 23.0))
                    } else {
                        (Place::Cellular, self.hours(12.0, 14.0))
                    };
                    let n = self.count(3, 20);
                    self.ordinary(u, Slot::Phone, place, day, hour, n);
                }
            }
        }
    }

    fn ordinary(&mut self, u: usize, slot: Slot, place: Place, day: u64, hour: f64, n: usize) {
        let mut s = self.new_session(u, Scenario::History);
        let fp = self.fingerprint(u, slot);
        let mut link = self.link(u, slot, place);
        let t = self.local(u, day, hour);
        self.burst(&mut s, t, n, Actor::Owner, &fp, &mut link, CLICKS);
        self.finish(s);
    }
}

// === impl Gen: scenarios ===

impl Gen<'_> {
    fn scenario(&mut self, u: usize, scenario: Scenario, day: u64) {
        match scenario {
            Scenario::History => {}
            Scenario::Roaming => self.roaming(u, day),
            Scenario::Zscaler => self.zscaler(u, day),
            Scenario::UpgradeMinor => self.upgrade(u, day, false),
            Scenario::UpgradeMajor => self.upgrade(u, day, true),
            Scenario::Flight => self.flight(u, day),
            Scenario::SharedNat => self.shared_nat(u, day),
            Scenario::IdleGap => self.idle_gap(u, day),
            Scenario::ReplayOtherCountry
            | Scenario::ReplaySameCountryOtherAsn
            | Scenario::ReplaySameIpOtherDevice
            | Scenario::ReplayCopiedUaOtherTls
            | Scenario::ReplayImpersonatedJa4OtherNetwork
            | Scenario::Interleaved => self.attack(u, scenario, day),
            Scenario::CloneSameIp | Scenario::CloneSameIsp | Scenario::CloneThiefFirst => {
                self.clone_attack(u, scenario, day);
            }
            Scenario::RotationLost => self.rotation_lost(u, day),
        }
    }

    /// Office, home and cellular in one session, each stretch at least 20
    /// minutes from the next: a commute on the phone (home Wi-Fi, cellular,
    /// office Wi-Fi, or the way back), or the laptop carried from the office
    /// home, sometimes tethered to the phone later.
    fn roaming(&mut self, u: usize, day: u64) {
        let slot = self.pick_slot(u, 0.6);
        let has_office = self.users[u].office.is_some();
        let (places, hour): (Vec<Place>, f64) = match (slot, has_office) {
            (Slot::Phone, true) => {
                if self.rng.random_bool(0.5) {
                    (
                        vec![Place::Home, Place::Cellular, Place::Office],
                        self.hours(6.5, 8.5),
                    )
                } else {
                    (
                        vec![Place::Office, Place::Cellular, Place::Home],
                        self.hours(15.5, 17.5),
                    )
                }
            }
            (Slot::Phone, false) => {
                if self.rng.random_bool(0.5) {
                    (vec![Place::Home, Place::Cellular], self.hours(7.0, 10.0))
                } else {
                    (vec![Place::Cellular, Place::Home], self.hours(15.0, 19.0))
                }
            }
            (Slot::Desktop, true) => {
                let mut p = if self.rng.random_bool(0.5) {
                    vec![Place::Office, Place::Home]
                } else {
                    vec![Place::Home, Place::Office]
                };
                if self.rng.random_bool(0.3) {
                    p.push(Place::Cellular);
                }
                (p, self.hours(7.0, 14.0))
            }
            (Slot::Desktop, false) => (vec![Place::Home, Place::Cellular], self.hours(9.0, 16.0)),
        };
        let mut s = self.new_session(u, Scenario::Roaming);
        let fp = self.fingerprint(u, slot);
        let mut t = self.local(u, day, hour);
        for (i, place) in places.into_iter().enumerate() {
            if i > 0 {
                // Commute or a move: 20 minutes to 2 hours.
                t += self.rng.random_range(20 * MINUTE..=120 * MINUTE);
            }
            let mut link = self.link(u, slot, place);
            let n = self.count(3, 12);
            t = self.burst(&mut s, t, n, Actor::Owner, &fp, &mut link, CLICKS);
        }
        self.finish(s);
    }

    /// A managed laptop behind the proxy: every connection may leave from
    /// another egress node; one session in seven fails over to the next
    /// point of presence (often in another country) half-way. The client in
    /// `X-Forwarded-For` stays.
    fn zscaler(&mut self, u: usize, day: u64) {
        let place = if self.users[u].office.is_some() && self.rng.random_bool(0.6) {
            Place::Office
        } else {
            Place::Home
        };
        let mut s = self.new_session(u, Scenario::Zscaler);
        let fp = self.fingerprint(u, Slot::Desktop);
        let mut link = self.link(u, Slot::Desktop, place);
        let hour = self.hours(8.0, 16.0);
        let t = self.local(u, day, hour);
        let n = self.count(10, 40);
        if self.rng.random_bool(0.15) {
            let first = n / 2;
            let t = self.burst(&mut s, t, first, Actor::Owner, &fp, &mut link, CLICKS);
            let user = &self.users[u];
            let c = &COUNTRIES[user.country].cities[user.city];
            let current = link.via.as_ref().and_then(|v| v.first().copied());
            link.via = Some(self.world.pop_nodes(&mut self.rng, (c.lat, c.lon), current));
            link.last_egress = None;
            let t = t + log_uniform(&mut self.rng, CLICKS.0, CLICKS.1);
            self.burst(&mut s, t, n - first, Actor::Owner, &fp, &mut link, CLICKS);
        } else {
            self.burst(&mut s, t, n, Actor::Owner, &fp, &mut link, CLICKS);
        }
        self.finish(s);
    }

    /// A browser update mid-session: the browser restarts (1 to 15
    /// minutes) and comes back a minor version or one major version newer,
    /// with the cookie.
    fn upgrade(&mut self, u: usize, day: u64, major: bool) {
        let slots: Vec<Slot> = [Slot::Desktop, Slot::Phone]
            .into_iter()
            .filter(|s| {
                self.device(u, *s)
                    .is_some_and(|d| !major || d.can_update_major())
            })
            .collect();
        let scenario = if major {
            Scenario::UpgradeMajor
        } else {
            Scenario::UpgradeMinor
        };
        let Some(slot) = slots.choose(&mut self.rng).copied() else {
            // An earlier major update of this user used up the last one
            // that exists (Safari 17 to 18).
            *self
                .stats
                .shortfall
                .entry(scenario.as_str().to_owned())
                .or_default() += 1;
            return;
        };
        let places = self.own_places(u);
        let place = *places.choose(&mut self.rng).unwrap_or(&Place::Home);
        let place = if slot == Slot::Desktop && place == Place::Cellular {
            Place::Home
        } else {
            place
        };
        let mut s = self.new_session(u, scenario);
        let mut link = self.link(u, slot, place);
        let fp = self.fingerprint(u, slot);
        let hour = self.hours(8.0, 21.0);
        let t = self.local(u, day, hour);
        let n = self.count(3, 15);
        let t = self.burst(&mut s, t, n, Actor::Owner, &fp, &mut link, CLICKS);
        if let Some(d) = self.device_mut(u, slot) {
            if major {
                d.update_major();
            } else {
                d.update_minor();
            }
        }
        let fp = self.fingerprint(u, slot);
        let t = t + self.rng.random_range(MINUTE..=15 * MINUTE);
        let note = if major {
            "major update"
        } else {
            "minor update"
        };
        self.send(&mut s, t, Actor::Owner, &fp, &mut link, Some(note.into()));
        let n = self.count(2, 14);
        let t = t + log_uniform(&mut self.rng, CLICKS.0, CLICKS.1);
        self.burst(&mut s, t, n, Actor::Owner, &fp, &mut link, CLICKS);
        self.finish(s);
    }

    /// A flight to another continent: the last request before leaving, then
    /// at least the trip to the airport and boarding (1.5 to 3 h), the
    /// flight at an average 780 to 880 km/h plus half an hour of taxi and
    /// climb, arrival (45 min to 2 h) and often a night's sleep, then the
    /// same session from a hotel, the company's local office, the phone
    /// roaming on the home carrier, or a local eSIM.
    fn flight(&mut self, u: usize, day: u64) {
        let slot = self.pick_slot(u, 0.5);
        let origin = if self.users[u].office.is_some() && self.rng.random_bool(0.5) {
            Place::Office
        } else {
            Place::Home
        };
        let mut s = self.new_session(u, Scenario::Flight);
        let fp = self.fingerprint(u, slot);
        let mut link = self.link(u, slot, origin);
        let hour = self.hours(6.0, 20.0);
        let t = self.local(u, day, hour);
        let n = self.count(3, 12);
        let last = self.burst(&mut s, t, n, Actor::Owner, &fp, &mut link, CLICKS);

        let user = self.users[u].clone();
        let from = COUNTRIES[user.country].cities[user.city];
        let home_continent = COUNTRIES[user.country].continent;
        let destinations: Vec<(usize, usize)> = user_countries()
            .into_iter()
            .filter(|c| COUNTRIES[*c].continent != home_continent)
            .flat_map(|c| (0..COUNTRIES[c].cities.len()).map(move |k| (c, k)))
            .collect();
        let Some(&(dc, dk)) = destinations.choose(&mut self.rng) else {
            self.finish(s);
            return;
        };
        let to = COUNTRIES[dc].cities[dk];
        let km = distance_km((from.lat, from.lon), (to.lat, to.lon));
        let speed = self.rng.random_range(780.0..880.0);
        let flight_h = km / speed + 0.5;
        let before = self.hours(1.5, 3.0);
        let after = self.hours(0.75, 2.0);
        let sleep = if self.rng.random_bool(0.5) {
            self.hours(4.0, 12.0)
        } else {
            0.0
        };
        let resume = last + secs((before + flight_h + after + sleep) * 3600.0);
        let effective = km / ((resume - last) as f64 / 3600.0);
        self.stats.max_flight_speed_kmh = self.stats.max_flight_speed_kmh.max(effective);

        let office_there = user.office.and_then(|site| {
            let company = self.world.sites[site].company?;
            self.world.companies[company]
                .offices
                .iter()
                .copied()
                .find(|o| self.world.sites[*o].country == dc)
        });
        let r: f64 = self.rng.random();
        let (client, net) = if r < 0.2 && slot == Slot::Phone {
            // Roaming data is routed home: an address of the home carrier.
            let ip = self.world.cgnat_ip(&mut self.rng, user.carrier);
            (Client::Cgnat { ip, since: None }, user.carrier)
        } else if r < 0.35 && slot == Slot::Phone {
            let carrier = *self.world.mobile[dc].choose(&mut self.rng).unwrap_or(&0);
            let ip = self.world.cgnat_ip(&mut self.rng, carrier);
            (Client::Cgnat { ip, since: None }, carrier)
        } else if let (true, Some(site)) = (r < 0.55, office_there) {
            let site = &self.world.sites[site];
            (Client::Pool(site.pool.clone()), site.net)
        } else {
            let net = *self.world.residential[dc][dk]
                .choose(&mut self.rng)
                .unwrap_or(&0);
            (Client::Fixed(self.world.random_ip(&mut self.rng, net)), net)
        };
        let via = link
            .via
            .is_some()
            .then(|| self.world.pop_nodes(&mut self.rng, (to.lat, to.lon), None));
        let mut there = Link {
            client,
            via,
            last_egress: None,
            net,
            at_office: false,
        };
        let note = format!(
            "landed in {} after {km:.0} km at {effective:.0} km/h",
            to.name
        );
        self.send(&mut s, resume, Actor::Owner, &fp, &mut there, Some(note));
        let n = self.count(2, 11);
        let t = resume + log_uniform(&mut self.rng, CLICKS.0, CLICKS.1);
        self.burst(&mut s, t, n, Actor::Owner, &fp, &mut there, CLICKS);
        self.finish(s);
    }

    /// A working day at a site where everybody shares one public address:
    /// the assignment put many of the site's users on the same day.
    fn shared_nat(&mut self, u: usize, day: u64) {
        let slot = self.pick_slot(u, 0.3);
        let mut s = self.new_session(u, Scenario::SharedNat);
        let fp = self.fingerprint(u, slot);
        let mut link = self.link(u, slot, Place::Office);
        let hour = self.hours(9.0, 15.0);
        let t = self.local(u, day, hour);
        let n = self.count(5, 30);
        self.burst(&mut s, t, n, Actor::Owner, &fp, &mut link, CLICKS);
        self.finish(s);
    }

    /// A session left open for 8 to 30 hours and picked up again: at the
    /// same place half the time (home addresses are sometimes reassigned
    /// overnight), at another of the user's places otherwise.
    fn idle_gap(&mut self, u: usize, day: u64) {
        let slot = self.pick_slot(u, 0.4);
        let mut places = self.own_places(u);
        if slot == Slot::Desktop {
            places.retain(|p| *p != Place::Cellular);
        }
        let first = *places.choose(&mut self.rng).unwrap_or(&Place::Home);
        let mut s = self.new_session(u, Scenario::IdleGap);
        let fp = self.fingerprint(u, slot);
        let mut link = self.link(u, slot, first);
        let hour = self.hours(8.0, 20.0);
        let t = self.local(u, day, hour);
        let n = self.count(3, 15);
        let t = self.burst(&mut s, t, n, Actor::Owner, &fp, &mut link, CLICKS);
        let idle = self.rng.random_range(8 * HOUR..=30 * HOUR);
        let second = if self.rng.random_bool(0.5) {
            first
        } else {
            *places.choose(&mut self.rng).unwrap_or(&Place::Home)
        };
        if second == Place::Home && self.rng.random_bool(0.25) {
            let net = self.users[u].home_net;
            self.users[u].home_ip = self.world.random_ip(&mut self.rng, net);
        }
        let mut link = self.link(u, slot, second);
        let n = self.count(3, 15);
        self.burst(&mut s, t + idle, n, Actor::Owner, &fp, &mut link, CLICKS);
        self.finish(s);
    }
}

// === impl Gen: attacks ===

impl Gen<'_> {
    /// A victim's session and a replay of its cookie.
    ///
    /// The owner uses the session (3 to 20 requests) at home, the office or
    /// on cellular. The cookie is stolen: by adversary-in-the-middle
    /// phishing (40%; the replay starts 1 to 30 minutes after the owner's
    /// last request) or by an infostealer whose logs are used later (60%; 1
    /// to 48 hours). The attacker sends 3 to 20 requests, 10 s to 10 min
    /// apart. Half the time the owner comes back afterwards. In
    /// `interleaved`, owner and attacker use the session in the same
    /// minutes instead.
    fn attack(&mut self, u: usize, scenario: Scenario, day: u64) {
        let slot = self.pick_slot(u, 0.4);
        let has_office = self.users[u].office.is_some();
        let place = match scenario {
            // A colleague behind the office NAT, or someone in the household.
            Scenario::ReplaySameIpOtherDevice => {
                if has_office && self.rng.random_bool(0.5) {
                    Place::Office
                } else {
                    Place::Home
                }
            }
            _ => {
                let r: f64 = self.rng.random();
                if r < 0.3 && has_office {
                    Place::Office
                } else if r < 0.55 {
                    Place::Cellular
                } else {
                    Place::Home
                }
            }
        };
        let place = if slot == Slot::Desktop && place == Place::Cellular {
            Place::Home
        } else {
            place
        };
        let mut s = self.new_session(u, scenario);
        let owner_fp = self.fingerprint(u, slot);
        let mut owner_link = self.link(u, slot, place);
        let hour = self.hours(7.0, 21.0);
        let t0 = self.local(u, day, hour);

        if scenario == Scenario::Interleaved {
            self.interleaved(u, slot, &mut s, t0, &owner_fp, &mut owner_link);
            self.finish(s);
            return;
        }

        let n = self.count(3, 20);
        let last = self.burst(
            &mut s,
            t0,
            n,
            Actor::Owner,
            &owner_fp,
            &mut owner_link,
            CLICKS,
        );
        let (delay, how) = if self.rng.random_bool(0.4) {
            (self.rng.random_range(MINUTE..=30 * MINUTE), "aitm")
        } else {
            (self.rng.random_range(HOUR..=48 * HOUR), "infostealer")
        };
        mark_theft(&mut s, how == "aitm");
        let (fp, mut link, what) = self.attacker(u, scenario, slot, &owner_fp, &owner_link);
        let start = last + delay;
        let note = format!("cookie replay ({how}, {what})");
        self.send(&mut s, start, Actor::Attacker, &fp, &mut link, Some(note));
        let n = self.count(2, 19);
        let t = start + log_uniform(&mut self.rng, CLICKS.0, CLICKS.1);
        let end = self.burst(&mut s, t, n, Actor::Attacker, &fp, &mut link, CLICKS);

        if self.rng.random_bool(0.5) {
            let back = end + self.rng.random_range(10 * MINUTE..=24 * HOUR);
            let mut link = if self.rng.random_bool(0.7) {
                owner_link
            } else {
                let places = self.own_places(u);
                let p = *places.choose(&mut self.rng).unwrap_or(&Place::Home);
                let p = if slot == Slot::Desktop && p == Place::Cellular {
                    Place::Home
                } else {
                    p
                };
                self.link(u, slot, p)
            };
            let n = self.count(2, 10);
            self.burst(&mut s, back, n, Actor::Owner, &owner_fp, &mut link, CLICKS);
        }
        self.finish(s);
    }

    /// Owner and attacker in the same minutes: the owner logs in and works
    /// (requests 30 s to 5 min apart); an attacker who phished the cookie
    /// joins within 1 to 10 minutes of the login and works alongside.
    #[allow(clippy::too_many_arguments, reason = "the session's facts so far")]
    fn interleaved(
        &mut self,
        u: usize,
        slot: Slot,
        s: &mut Session,
        t0: u64,
        owner_fp: &Fingerprint,
        owner_link: &mut Link,
    ) {
        const BUSY: (f64, f64) = (30.0, 300.0);
        let n_owner = self.count(8, 25);
        let (fp, mut link, what) =
            self.attacker(u, Scenario::Interleaved, slot, owner_fp, owner_link);
        // Owner and attacker requests, generated apart and merged by time.
        let mut owner_times = Vec::new();
        let mut t = t0;
        for i in 0..n_owner {
            if i > 0 {
                t += log_uniform(&mut self.rng, BUSY.0, BUSY.1);
            }
            owner_times.push(t);
        }
        let mut attacker_times = Vec::new();
        let mut t = t0 + self.rng.random_range(MINUTE..=10 * MINUTE);
        for i in 0..self.count(3, 20) {
            if i > 0 {
                t += log_uniform(&mut self.rng, BUSY.0, BUSY.1);
            }
            attacker_times.push(t);
        }
        let mut merged: Vec<(u64, Actor)> = owner_times
            .into_iter()
            .map(|t| (t, Actor::Owner))
            .chain(attacker_times.into_iter().map(|t| (t, Actor::Attacker)))
            .collect();
        merged.sort_by_key(|(t, a)| (*t, *a == Actor::Attacker));
        let mut first_attack = true;
        for (t, actor) in merged {
            match actor {
                Actor::Owner => self.send(s, t, actor, owner_fp, owner_link, None),
                Actor::Attacker => {
                    let note = first_attack.then(|| format!("cookie replay (aitm, {what})"));
                    first_attack = false;
                    self.send(s, t, actor, &fp, &mut link, note);
                }
            }
        }
        // Phished at login: the jar as the login left it.
        mark_theft(s, true);
    }

    /// The attacker's client and network for `scenario`, and a short
    /// description for the note.
    fn attacker(
        &mut self,
        u: usize,
        scenario: Scenario,
        slot: Slot,
        owner_fp: &Fingerprint,
        owner_link: &Link,
    ) -> (Fingerprint, Link, String) {
        let victim_country = self.world.country_of(owner_link.net);
        let victim_asn = self.world.asn_of(owner_link.net);
        match scenario {
            Scenario::ReplayOtherCountry => {
                let (link, country) = self.other_country_link(victim_country);
                let fp = self.attacker_device(country).fingerprint();
                (fp, link, "own device, abroad".into())
            }
            Scenario::ReplaySameCountryOtherAsn => {
                let link = self.same_country_link(victim_country, victim_asn);
                let fp = self.attacker_device(victim_country).fingerprint();
                (fp, link, "own device, same country".into())
            }
            Scenario::ReplaySameIpOtherDevice => {
                let fp = self.same_ip_device(u, slot, owner_fp);
                let mut link = owner_link.clone();
                link.last_egress = None;
                // Only the company's managed laptops go through the proxy:
                // a colleague's laptop at the office does, a housemate's
                // device at home does not.
                if !link.at_office {
                    link.via = None;
                }
                (fp, link, "other device, same address".into())
            }
            Scenario::ReplayCopiedUaOtherTls => {
                let (link, _) = self.other_network_link(victim_country, victim_asn);
                let mut fp = owner_fp.clone();
                let what = if self.rng.random_bool(0.8) {
                    let tool = Tool::random(&mut self.rng);
                    fp.ja4 = tool.ja4().to_owned();
                    format!("copied headers, {} TLS", tool.name())
                } else {
                    // A browser of another family with the UA overridden.
                    let own = self.other_family_browser(&owner_fp.ja4);
                    fp.ja4 = own;
                    "copied headers, other browser's TLS".to_owned()
                };
                (fp, link, what)
            }
            Scenario::ReplayImpersonatedJa4OtherNetwork => {
                let (link, same) = self.other_network_link(victim_country, victim_asn);
                let where_ = if same { "same country" } else { "abroad" };
                (
                    owner_fp.clone(),
                    link,
                    format!("impersonated headers and JA4, {where_}"),
                )
            }
            _ => {
                let (link, same) = self.other_network_link(victim_country, victim_asn);
                let country = self.world.country_of(link.net);
                let where_ = if same { "same country" } else { "abroad" };
                if self.rng.random_bool(0.5) {
                    (owner_fp.clone(), link, format!("impersonated, {where_}"))
                } else {
                    let fp = self.attacker_device(country).fingerprint();
                    (fp, link, format!("own device, {where_}"))
                }
            }
        }
    }

    /// Another network: half the time another ASN in the victim's country,
    /// half the time abroad. Says whether it is in the same country.
    fn other_network_link(&mut self, country: usize, asn: u32) -> (Link, bool) {
        if self.rng.random_bool(0.5) {
            (self.same_country_link(country, asn), true)
        } else {
            (self.other_country_link(country).0, false)
        }
    }

    /// Abroad: a VPS or VPN exit (half), or a residential line or
    /// residential proxy in another country. Returns the country.
    fn other_country_link(&mut self, victim_country: usize) -> (Link, usize) {
        let nets: Vec<usize> = if self.rng.random_bool(0.5) {
            (0..COUNTRIES.len())
                .filter(|c| *c != victim_country)
                .flat_map(|c| self.world.hosting[c].clone())
                .collect()
        } else {
            // Attackers' home countries weigh more than the user countries.
            let attacker_home = self.rng.random_bool(0.6);
            (0..COUNTRIES.len())
                .filter(|c| *c != victim_country)
                .filter(|c| (COUNTRIES[*c].user_weight == 0) == attacker_home)
                .flat_map(|c| {
                    self.world.residential[c]
                        .iter()
                        .flatten()
                        .copied()
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let net = *nets.choose(&mut self.rng).unwrap_or(&0);
        (self.attacker_link(net), self.world.country_of(net))
    }

    /// Same country, another ASN: a residential proxy (half), a mobile proxy
    /// (a fifth) or a VPN exit in the country.
    fn same_country_link(&mut self, country: usize, asn: u32) -> Link {
        let r: f64 = self.rng.random();
        let mut nets: Vec<usize> = if r < 0.5 {
            self.world.residential[country]
                .iter()
                .flatten()
                .copied()
                .collect()
        } else if r < 0.7 {
            self.world.mobile[country].clone()
        } else {
            self.world.hosting[country].clone()
        };
        nets.retain(|n| self.world.asn_of(*n) != asn);
        if nets.is_empty() {
            nets = self.world.residential[country]
                .iter()
                .flatten()
                .chain(self.world.mobile[country].iter())
                .chain(self.world.hosting[country].iter())
                .copied()
                .filter(|n| self.world.asn_of(*n) != asn)
                .collect();
        }
        let net = *nets.choose(&mut self.rng).unwrap_or(&0);
        self.attacker_link(net)
    }

    /// An address in `net`: fixed for the replay, or rotating per request
    /// (rotating proxies, 30%).
    fn attacker_link(&mut self, net: usize) -> Link {
        let client = if self.rng.random_bool(0.3) {
            Client::Rotating
        } else {
            Client::Fixed(self.world.random_ip(&mut self.rng, net))
        };
        Link {
            client,
            via: None,
            last_egress: None,
            net,
            at_office: false,
        }
    }

    fn attacker_device(&mut self, country: usize) -> Device {
        let lang = if self.rng.random_bool(0.6) {
            "en-US"
        } else {
            pick(&mut self.rng, COUNTRIES[country].languages)
        };
        Device::attacker(&mut self.rng, lang)
    }

    /// A device of the victim's country (a colleague's, a housemate's),
    /// redrawn until it differs from the victim's in at least one trait the
    /// engine can observe.
    fn same_ip_device(&mut self, u: usize, slot: Slot, owner_fp: &Fingerprint) -> Fingerprint {
        let country = self.users[u].country;
        let c = &COUNTRIES[country];
        let victim = self.device(u, slot).cloned();
        let victim_traits = owner_fp.traits(victim.as_ref());
        loop {
            let lang = pick(&mut self.rng, c.languages);
            let d = if self.rng.random_bool(0.5) {
                Device::desktop(&mut self.rng, c.mac_percent, lang)
            } else {
                Device::phone(&mut self.rng, c.ios_percent, lang)
            };
            let fp = d.fingerprint();
            self.stats.same_ip_device_draws += 1;
            if fp.traits(Some(&d)) != victim_traits {
                return fp;
            }
            self.stats.same_ip_device_rejected += 1;
        }
    }

    /// The JA4 of a browser whose stack is not `victim_ja4`'s family.
    fn other_family_browser(&mut self, victim_ja4: &str) -> String {
        let family = |ja4: &str| ja4.split('_').nth(1).unwrap_or("").to_owned();
        loop {
            let d = Device::attacker(&mut self.rng, "en-US");
            if family(d.ja4()) != family(victim_ja4) {
                return d.ja4().to_owned();
            }
        }
    }
}

/// Marks the moment of theft: the owner's first request (adversary in the
/// middle at login: the jar the login response left) or, for an
/// infostealer, the owner's latest so far (the jar on disk afterwards).
fn mark_theft(s: &mut Session, at_login: bool) {
    let mut owners = s.events.iter_mut().filter(|e| e.actor == Actor::Owner);
    let event = if at_login {
        owners.next()
    } else {
        owners.last()
    };
    if let Some(e) = event {
        e.steal = true;
    }
}

// === impl Gen: perfect clones ===

impl Gen<'_> {
    /// The perfect-clone classes, `sessions_per_class` each, after every
    /// other scenario of their user (so no earlier session of the user sees
    /// their effects) and from a random stream of their own (so that adding
    /// them changed no draw of the rest of the corpus).
    fn clones(&mut self, next_free: &mut [usize]) {
        if self.users.is_empty() {
            return;
        }
        self.rng = Rng::seed_from_u64(self.cfg.seed ^ 0xc10e_c10e_c10e_c10e);
        let n_users = self.users.len();
        for _ in 0..self.cfg.sessions_per_class {
            for class in Scenario::CLONES {
                // The least busy of a few random users.
                let mut best = self.rng.random_range(0..n_users);
                for _ in 0..5 {
                    let u = self.rng.random_range(0..n_users);
                    if next_free[u] < next_free[best] {
                        best = u;
                    }
                }
                let slot = next_free[best];
                next_free[best] += span(class);
                let day = self.cfg.history_days + slot as u64 * SLOT_DAYS;
                self.clone_attack(best, class, day);
            }
        }
    }

    /// A perfect clone: the victim's User-Agent, every header and the JA4,
    /// replaying the jar as it was at the moment of theft.
    ///
    /// * `clone_same_ip`, `clone_same_isp`: stolen by adversary in the
    ///   middle at login (40%; the replay 1 to 30 minutes after the owner's
    ///   latest request) or by an infostealer (60%; 1 to 48 hours), and the
    ///   owner comes back while the thief is at it (the owner's return
    ///   starts within two hours of the replay's start): the victim active
    ///   in between. From the victim's exact address, or from another
    ///   address of the network the victim was on.
    /// * `clone_thief_first`: an infostealer; the victim is offline for 2
    ///   to 12 hours, the thief (the victim's address or ISP, half each)
    ///   uses the session first, the victim returns 10 minutes to 8 hours
    ///   after the thief's last request, and the thief comes back 10
    ///   minutes to 8 hours after the victim's.
    fn clone_attack(&mut self, u: usize, scenario: Scenario, day: u64) {
        let slot = self.pick_slot(u, 0.4);
        let has_office = self.users[u].office.is_some();
        let r: f64 = self.rng.random();
        let place = if r < 0.3 && has_office {
            Place::Office
        } else if r < 0.55 && slot == Slot::Phone {
            Place::Cellular
        } else {
            Place::Home
        };
        let mut s = self.new_session(u, scenario);
        let fp = self.fingerprint(u, slot);
        let mut owner_link = self.link(u, slot, place);
        let hour = self.hours(7.0, 21.0);
        let t0 = self.local(u, day, hour);
        let n = self.count(3, 20);
        let last = self.burst(&mut s, t0, n, Actor::Owner, &fp, &mut owner_link, CLICKS);
        let same_ip = match scenario {
            Scenario::CloneSameIp => true,
            Scenario::CloneSameIsp => false,
            _ => self.rng.random_bool(0.5),
        };
        let mut thief = if same_ip {
            let mut link = owner_link.clone();
            link.last_egress = None;
            link
        } else {
            self.same_isp_link(&owner_link)
        };
        let what = if same_ip {
            "perfect clone, same address"
        } else {
            "perfect clone, same ISP"
        };
        if scenario == Scenario::CloneThiefFirst {
            mark_theft(&mut s, false);
            let start = last + self.rng.random_range(2 * HOUR..=12 * HOUR);
            let note = format!("cookie replay (infostealer, {what}, victim offline)");
            self.send(&mut s, start, Actor::Attacker, &fp, &mut thief, Some(note));
            let n = self.count(2, 19);
            let t = start + log_uniform(&mut self.rng, CLICKS.0, CLICKS.1);
            let end = self.burst(&mut s, t, n, Actor::Attacker, &fp, &mut thief, CLICKS);
            let back = end + self.rng.random_range(10 * MINUTE..=8 * HOUR);
            let n = self.count(3, 15);
            let end = self.burst(&mut s, back, n, Actor::Owner, &fp, &mut owner_link, CLICKS);
            let again = end + self.rng.random_range(10 * MINUTE..=8 * HOUR);
            let n = self.count(2, 10);
            self.burst(&mut s, again, n, Actor::Attacker, &fp, &mut thief, CLICKS);
            self.finish(s);
            return;
        }
        let (delay, how) = if self.rng.random_bool(0.4) {
            (self.rng.random_range(MINUTE..=30 * MINUTE), "aitm")
        } else {
            (self.rng.random_range(HOUR..=48 * HOUR), "infostealer")
        };
        mark_theft(&mut s, how == "aitm");
        let start = last + delay;
        let mut times: Vec<(u64, Actor)> = Vec::new();
        let mut t = start;
        for i in 0..self.count(3, 20) {
            if i > 0 {
                t += log_uniform(&mut self.rng, CLICKS.0, CLICKS.1);
            }
            times.push((t, Actor::Attacker));
        }
        let mut t = start + self.rng.random_range(MINUTE..=2 * HOUR);
        for i in 0..self.count(3, 15) {
            if i > 0 {
                t += log_uniform(&mut self.rng, CLICKS.0, CLICKS.1);
            }
            times.push((t, Actor::Owner));
        }
        times.sort_by_key(|(t, a)| (*t, *a == Actor::Attacker));
        let mut first_attack = true;
        for (t, actor) in times {
            match actor {
                Actor::Owner => self.send(&mut s, t, actor, &fp, &mut owner_link, None),
                Actor::Attacker => {
                    let note = first_attack.then(|| format!("cookie replay ({how}, {what})"));
                    first_attack = false;
                    self.send(&mut s, t, actor, &fp, &mut thief, note);
                }
            }
        }
        self.finish(s);
    }

    /// Another address of the network the victim was on (the home ISP's
    /// range, the carrier's NAT pool, the office's business line): what a
    /// residential proxy in the victim's ISP gives. Never through the
    /// company's proxy.
    fn same_isp_link(&mut self, owner: &Link) -> Link {
        let own: Vec<Ipv4Addr> = match &owner.client {
            Client::Fixed(ip) | Client::Cgnat { ip, .. } => vec![*ip],
            Client::Pool(pool) => pool.clone(),
            Client::Rotating => Vec::new(),
        };
        let cgnat = matches!(owner.client, Client::Cgnat { .. });
        let mut ip = Ipv4Addr::UNSPECIFIED;
        for _ in 0..64 {
            ip = if cgnat {
                self.world.cgnat_ip(&mut self.rng, owner.net)
            } else {
                self.world.random_ip(&mut self.rng, owner.net)
            };
            if !own.contains(&ip) {
                break;
            }
        }
        Link {
            client: Client::Fixed(ip),
            via: None,
            last_egress: None,
            net: owner.net,
            at_office: false,
        }
    }
}

// === impl Gen: lost rotations ===

impl Gen<'_> {
    /// The `rotation_lost` sessions, `sessions_per_class` of them, after
    /// every other session of their user and from a random stream of their
    /// own, as the clones are (so adding them changed no draw of the rest
    /// of the corpus, clones included).
    fn lost_rotations(&mut self, next_free: &mut [usize]) {
        if self.users.is_empty() {
            return;
        }
        self.rng = Rng::seed_from_u64(self.cfg.seed ^ 0x1057_1057_1057_1057);
        let n_users = self.users.len();
        for _ in 0..self.cfg.sessions_per_class {
            let mut best = self.rng.random_range(0..n_users);
            for _ in 0..5 {
                let u = self.rng.random_range(0..n_users);
                if next_free[u] < next_free[best] {
                    best = u;
                }
            }
            let slot = next_free[best];
            next_free[best] += span(Scenario::RotationLost);
            let day = self.cfg.history_days + slot as u64 * SLOT_DAYS;
            self.rotation_lost(best, day);
        }
    }

    /// An owner whose browser does not store one rotation of the
    /// companion cookie: 12 to 40 requests at one of their places, long
    /// enough for rotations (300 s) to happen; from the 3rd to the middle
    /// request on, the next response that sets a cookie is lost, and the
    /// browser goes on with the generation it held. In 30% of the sessions
    /// a later rotation is lost too (a flaky connection).
    fn rotation_lost(&mut self, u: usize, day: u64) {
        let slot = self.pick_slot(u, 0.5);
        let mut places = self.own_places(u);
        if slot == Slot::Desktop {
            places.retain(|p| *p != Place::Cellular);
        }
        let place = *places.choose(&mut self.rng).unwrap_or(&Place::Home);
        let mut s = self.new_session(u, Scenario::RotationLost);
        let fp = self.fingerprint(u, slot);
        let mut link = self.link(u, slot, place);
        let hour = self.hours(8.0, 20.0);
        let t = self.local(u, day, hour);
        let n = self.count(12, 40);
        self.burst(&mut s, t, n, Actor::Owner, &fp, &mut link, CLICKS);
        let first = self.rng.random_range(2..=n / 2);
        let mut marks = vec![first];
        if self.rng.random_bool(0.3) && first + 4 < n {
            marks.push(self.rng.random_range(first + 4..n));
        }
        for i in marks {
            if let Some(e) = s.events.get_mut(i) {
                e.lose_rotation = true;
                e.note = Some("the next rotation's response is lost".into());
            }
        }
        self.finish(s);
    }
}

// === impl Link ===

impl Link {
    /// The peer and `X-Forwarded-For` of the next request at `t`.
    fn point(&mut self, world: &World, rng: &mut Rng, t: u64) -> (IpAddr, Option<String>) {
        let client = match &mut self.client {
            Client::Fixed(ip) => *ip,
            Client::Pool(pool) => *pool.choose(rng).unwrap_or(&Ipv4Addr::UNSPECIFIED),
            Client::Cgnat { ip, since } => {
                // Carrier NAT mappings last minutes to an hour.
                match since {
                    None => *since = Some(t),
                    Some(s) if t.saturating_sub(*s) > 15 * MINUTE && rng.random_bool(0.3) => {
                        *ip = world.cgnat_ip(rng, self.net);
                        *since = Some(t);
                    }
                    Some(_) => {}
                }
                *ip
            }
            Client::Rotating => world.random_ip(rng, self.net),
        };
        match &self.via {
            None => (IpAddr::V4(client), None),
            Some(nodes) => {
                let egress = match self.last_egress {
                    Some(e) if rng.random_bool(0.5) => e,
                    _ => *nodes.choose(rng).unwrap_or(&Ipv4Addr::UNSPECIFIED),
                };
                self.last_egress = Some(egress);
                (IpAddr::V4(egress), Some(client.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests;
