//! The synthetic world: countries and cities, their ISPs, carriers, offices,
//! campuses, hosting providers and a Zscaler-style proxy, laid out as an IP
//! plan.
//!
//! Names, AS numbers and city coordinates are real; the address ranges are
//! synthetic (sequential `/16`s out of public unicast `/8`s, `/24`s for
//! sites), except the proxy's egress ranges, which are styled after
//! Zscaler's published `165.225.0.0/16`. No range is private, loopback,
//! CGNAT (`100.64.0.0/10`) or documentation space.

use std::net::Ipv4Addr;

use rand::RngExt;
use rand::seq::IndexedRandom;

use crate::scenario::{Network, NetworkKind};

use super::Rng;

/// A continent, for flights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Continent {
    NorthAmerica,
    SouthAmerica,
    Europe,
    Asia,
    Oceania,
    Africa,
}

/// A city: name, coordinates, UTC offset in minutes (January).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CitySpec {
    pub name: &'static str,
    pub lat: f64,
    pub lon: f64,
    pub utc_minutes: i64,
}

/// An operator: AS number and organisation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operator {
    pub asn: u32,
    pub org: &'static str,
}

/// A country of the world. `user_weight` 0: only attackers live there.
#[derive(Debug)]
pub(crate) struct CountrySpec {
    pub code: &'static str,
    pub continent: Continent,
    pub cities: &'static [CitySpec],
    pub isps: &'static [Operator],
    pub carriers: &'static [Operator],
    /// `Accept-Language` primary tags and weights.
    pub languages: &'static [(&'static str, u32)],
    /// Relative number of users.
    pub user_weight: u32,
    /// Share of phones that are iPhones, in percent.
    pub ios_percent: u32,
    /// Share of desktops that are Macs, in percent.
    pub mac_percent: u32,
    /// Where geo databases put mobile addresses of large countries (the
    /// country's centre); `None`: at the first city.
    pub centroid: Option<(f64, f64)>,
    /// Accuracy radius of mobile addresses at the first city.
    pub mobile_accuracy_km: u16,
}

const fn city(name: &'static str, lat: f64, lon: f64, utc_minutes: i64) -> CitySpec {
    CitySpec {
        name,
        lat,
        lon,
        utc_minutes,
    }
}

const fn op(asn: u32, org: &'static str) -> Operator {
    Operator { asn, org }
}

/// The countries. The first eleven have users; the rest only attackers.
pub(crate) static COUNTRIES: &[CountrySpec] = &[
    CountrySpec {
        code: "US",
        continent: Continent::NorthAmerica,
        cities: &[
            city("New York", 40.7128, -74.0060, -300),
            city("Chicago", 41.8781, -87.6298, -360),
            city("San Francisco", 37.7749, -122.4194, -480),
        ],
        isps: &[
            op(7922, "Comcast Cable Communications, LLC"),
            op(20115, "Charter Communications Inc"),
            op(7018, "AT&T Services, Inc."),
        ],
        carriers: &[
            op(21928, "T-Mobile USA, Inc."),
            op(6167, "Cellco Partnership DBA Verizon Wireless"),
        ],
        languages: &[("en-US", 90), ("es-US", 7), ("zh-CN", 3)],
        user_weight: 24,
        ios_percent: 55,
        centroid: Some((37.751, -97.822)),
        mobile_accuracy_km: 1000,
        mac_percent: 25,
    },
    CountrySpec {
        code: "CA",
        continent: Continent::NorthAmerica,
        cities: &[
            city("Toronto", 43.6532, -79.3832, -300),
            city("Vancouver", 49.2827, -123.1207, -480),
        ],
        isps: &[
            op(812, "Rogers Communications Canada Inc."),
            op(577, "Bell Canada"),
        ],
        carriers: &[op(852, "TELUS Communications Inc.")],
        languages: &[("en-CA", 60), ("en-US", 20), ("fr-CA", 20)],
        user_weight: 6,
        ios_percent: 55,
        centroid: Some((56.1304, -106.3468)),
        mobile_accuracy_km: 1000,
        mac_percent: 20,
    },
    CountrySpec {
        code: "BR",
        continent: Continent::SouthAmerica,
        cities: &[
            city("Sao Paulo", -23.5505, -46.6333, -180),
            city("Rio de Janeiro", -22.9068, -43.1729, -180),
        ],
        isps: &[
            op(28573, "Claro NXT Telecomunicacoes Ltda"),
            op(18881, "TELEFONICA BRASIL S.A"),
        ],
        carriers: &[op(26615, "TIM S/A")],
        languages: &[("pt-BR", 95), ("en-US", 5)],
        user_weight: 8,
        ios_percent: 18,
        centroid: Some((-14.235, -51.9253)),
        mobile_accuracy_km: 1000,
        mac_percent: 8,
    },
    CountrySpec {
        code: "GB",
        continent: Continent::Europe,
        cities: &[
            city("London", 51.5074, -0.1278, 0),
            city("Manchester", 53.4808, -2.2426, 0),
        ],
        isps: &[
            op(2856, "British Telecommunications PLC"),
            op(5089, "Virgin Media Limited"),
        ],
        carriers: &[op(12576, "EE Limited"), op(25135, "Vodafone Limited")],
        languages: &[("en-GB", 85), ("en-US", 12), ("pl-PL", 3)],
        user_weight: 10,
        ios_percent: 50,
        centroid: None,
        mobile_accuracy_km: 200,
        mac_percent: 18,
    },
    CountrySpec {
        code: "DE",
        continent: Continent::Europe,
        cities: &[
            city("Berlin", 52.5200, 13.4050, 60),
            city("Munich", 48.1351, 11.5820, 60),
            city("Frankfurt", 50.1109, 8.6821, 60),
        ],
        isps: &[op(3320, "Deutsche Telekom AG"), op(3209, "Vodafone GmbH")],
        carriers: &[op(6805, "Telefonica Germany GmbH & Co.OHG")],
        languages: &[("de-DE", 85), ("en-US", 10), ("tr-TR", 5)],
        user_weight: 10,
        ios_percent: 35,
        centroid: None,
        mobile_accuracy_km: 200,
        mac_percent: 15,
    },
    CountrySpec {
        code: "FR",
        continent: Continent::Europe,
        cities: &[
            city("Paris", 48.8566, 2.3522, 60),
            city("Lyon", 45.7640, 4.8357, 60),
        ],
        isps: &[op(3215, "Orange S.A."), op(12322, "Free SAS")],
        carriers: &[
            op(5410, "Bouygues Telecom SA"),
            op(51207, "Free Mobile SAS"),
        ],
        languages: &[("fr-FR", 92), ("en-US", 8)],
        user_weight: 8,
        ios_percent: 35,
        centroid: None,
        mobile_accuracy_km: 200,
        mac_percent: 15,
    },
    CountrySpec {
        code: "NL",
        continent: Continent::Europe,
        cities: &[
            city("Amsterdam", 52.3676, 4.9041, 60),
            city("Rotterdam", 51.9244, 4.4777, 60),
        ],
        isps: &[op(1136, "KPN B.V."), op(33915, "Vodafone Libertel B.V.")],
        carriers: &[op(50266, "Odido Netherlands B.V.")],
        languages: &[("nl-NL", 70), ("en-US", 25), ("en-GB", 5)],
        user_weight: 5,
        ios_percent: 45,
        centroid: None,
        mobile_accuracy_km: 100,
        mac_percent: 15,
    },
    CountrySpec {
        code: "IN",
        continent: Continent::Asia,
        cities: &[
            city("Bengaluru", 12.9716, 77.5946, 330),
            city("Mumbai", 19.0760, 72.8777, 330),
        ],
        isps: &[
            op(24560, "Bharti Airtel Ltd., Telemedia Services"),
            op(24309, "Atria Convergence Technologies Pvt. Ltd."),
        ],
        carriers: &[
            op(55836, "Reliance Jio Infocomm Limited"),
            op(45609, "Bharti Airtel Ltd. AS for GPRS Service"),
        ],
        languages: &[("en-IN", 50), ("en-US", 40), ("hi-IN", 10)],
        user_weight: 10,
        ios_percent: 5,
        centroid: Some((20.5937, 78.9629)),
        mobile_accuracy_km: 1000,
        mac_percent: 5,
    },
    CountrySpec {
        code: "JP",
        continent: Continent::Asia,
        cities: &[
            city("Tokyo", 35.6762, 139.6503, 540),
            city("Osaka", 34.6937, 135.5023, 540),
        ],
        isps: &[
            op(4713, "NTT Communications Corporation"),
            op(2516, "KDDI CORPORATION"),
        ],
        carriers: &[op(9605, "NTT DOCOMO, INC."), op(17676, "SoftBank Corp.")],
        languages: &[("ja-JP", 95), ("en-US", 5)],
        user_weight: 8,
        ios_percent: 65,
        centroid: None,
        mobile_accuracy_km: 500,
        mac_percent: 15,
    },
    CountrySpec {
        code: "SG",
        continent: Continent::Asia,
        cities: &[city("Singapore", 1.3521, 103.8198, 480)],
        isps: &[op(9506, "Singtel Fibre Broadband"), op(4657, "StarHub Ltd")],
        carriers: &[op(17547, "M1 NET LTD")],
        languages: &[("en-SG", 40), ("en-US", 40), ("zh-CN", 20)],
        user_weight: 4,
        ios_percent: 50,
        centroid: None,
        mobile_accuracy_km: 50,
        mac_percent: 20,
    },
    CountrySpec {
        code: "AU",
        continent: Continent::Oceania,
        cities: &[
            city("Sydney", -33.8688, 151.2093, 660),
            city("Melbourne", -37.8136, 144.9631, 660),
        ],
        isps: &[op(1221, "Telstra Limited"), op(4804, "Optus Internet")],
        carriers: &[op(133612, "Vodafone Australia Pty Ltd")],
        languages: &[("en-AU", 80), ("en-US", 15), ("en-GB", 5)],
        user_weight: 7,
        ios_percent: 55,
        centroid: Some((-25.2744, 133.7751)),
        mobile_accuracy_km: 1000,
        mac_percent: 20,
    },
    CountrySpec {
        code: "RU",
        continent: Continent::Europe,
        cities: &[city("Moscow", 55.7558, 37.6173, 180)],
        isps: &[op(12389, "PJSC Rostelecom"), op(3216, "PJSC Vimpelcom")],
        carriers: &[op(8359, "MTS PJSC")],
        languages: &[("ru-RU", 100)],
        user_weight: 0,
        ios_percent: 30,
        centroid: Some((61.524, 105.3188)),
        mobile_accuracy_km: 1000,
        mac_percent: 5,
    },
    CountrySpec {
        code: "NG",
        continent: Continent::Africa,
        cities: &[city("Lagos", 6.5244, 3.3792, 60)],
        isps: &[op(37148, "Globacom Limited")],
        carriers: &[op(29465, "MTN NIGERIA Communication limited")],
        languages: &[("en-US", 70), ("en-NG", 30)],
        user_weight: 0,
        ios_percent: 10,
        centroid: None,
        mobile_accuracy_km: 500,
        mac_percent: 5,
    },
    CountrySpec {
        code: "VN",
        continent: Continent::Asia,
        cities: &[city("Hanoi", 21.0278, 105.8342, 420)],
        isps: &[op(45899, "VNPT Corp"), op(18403, "FPT Telecom Company")],
        carriers: &[op(7552, "Viettel Group")],
        languages: &[("vi-VN", 80), ("en-US", 20)],
        user_weight: 0,
        ios_percent: 30,
        centroid: None,
        mobile_accuracy_km: 500,
        mac_percent: 5,
    },
    CountrySpec {
        code: "RO",
        continent: Continent::Europe,
        cities: &[city("Bucharest", 44.4268, 26.1025, 120)],
        isps: &[op(8708, "RCS & RDS SA")],
        carriers: &[op(8953, "Orange Romania SA")],
        languages: &[("ro-RO", 70), ("en-US", 30)],
        user_weight: 0,
        ios_percent: 25,
        centroid: None,
        mobile_accuracy_km: 200,
        mac_percent: 5,
    },
];

/// Carriers that sell business lines to offices in every country, beside
/// the country's own ISPs.
static BUSINESS_CARRIERS: &[Operator] = &[
    op(3356, "Level 3 Parent, LLC"),
    op(174, "Cogent Communications"),
    op(8220, "COLT Technology Services Group Limited"),
];

/// Hosting and VPN exits: country, city, operator, accuracy radius.
static HOSTING: &[(&str, CitySpec, Operator, u16)] = &[
    (
        "US",
        city("New York", 40.7128, -74.0060, -300),
        op(14061, "DigitalOcean, LLC"),
        100,
    ),
    (
        "US",
        city("Ashburn", 39.0438, -77.4874, -300),
        op(16509, "Amazon.com, Inc."),
        1000,
    ),
    (
        "US",
        city("Chicago", 41.8781, -87.6298, -360),
        op(20473, "The Constant Company, LLC"),
        200,
    ),
    (
        "CA",
        city("Beauharnois", 45.3151, -73.8779, -300),
        op(16276, "OVH SAS"),
        200,
    ),
    (
        "BR",
        city("Sao Paulo", -23.5505, -46.6333, -180),
        op(16509, "Amazon.com, Inc."),
        1000,
    ),
    (
        "GB",
        city("London", 51.5074, -0.1278, 0),
        op(9009, "M247 Europe SRL"),
        100,
    ),
    (
        "GB",
        city("London", 51.5074, -0.1278, 0),
        op(14061, "DigitalOcean, LLC"),
        100,
    ),
    (
        "DE",
        city("Frankfurt", 50.1109, 8.6821, 60),
        op(14061, "DigitalOcean, LLC"),
        100,
    ),
    (
        "DE",
        city("Falkenstein", 50.4779, 12.3713, 60),
        op(24940, "Hetzner Online GmbH"),
        200,
    ),
    (
        "FR",
        city("Roubaix", 50.6942, 3.1746, 60),
        op(16276, "OVH SAS"),
        200,
    ),
    (
        "NL",
        city("Amsterdam", 52.3676, 4.9041, 60),
        op(14061, "DigitalOcean, LLC"),
        100,
    ),
    (
        "NL",
        city("Amsterdam", 52.3676, 4.9041, 60),
        op(9009, "M247 Europe SRL"),
        100,
    ),
    (
        "IN",
        city("Bengaluru", 12.9716, 77.5946, 330),
        op(14061, "DigitalOcean, LLC"),
        100,
    ),
    (
        "JP",
        city("Tokyo", 35.6762, 139.6503, 540),
        op(20473, "The Constant Company, LLC"),
        200,
    ),
    (
        "SG",
        city("Singapore", 1.3521, 103.8198, 480),
        op(14061, "DigitalOcean, LLC"),
        50,
    ),
    (
        "AU",
        city("Sydney", -33.8688, 151.2093, 660),
        op(16509, "Amazon.com, Inc."),
        1000,
    ),
    (
        "RO",
        city("Bucharest", 44.4268, 26.1025, 120),
        op(9009, "M247 Europe SRL"),
        100,
    ),
    (
        "RU",
        city("Saint Petersburg", 59.9311, 30.3609, 180),
        op(49505, "JSC Selectel"),
        200,
    ),
];

/// Campuses where many users share one address: country, city index,
/// operator.
static CAMPUSES: &[(&str, usize, Operator)] = &[
    ("US", 0, op(14, "Columbia University")),
    ("GB", 0, op(786, "Jisc Services Limited")),
    (
        "DE",
        0,
        op(
            680,
            "Verein zur Foerderung eines Deutschen Forschungsnetzes e.V.",
        ),
    ),
    ("FR", 0, op(2200, "Renater")),
    ("IN", 0, op(2697, "ERNET India")),
    (
        "JP",
        0,
        op(
            2907,
            "Research Organization of Information and Systems, National Institute of Informatics",
        ),
    ),
];

/// The proxy's points of presence: country, city.
static ZSCALER_POPS: &[(&str, CitySpec)] = &[
    ("US", city("Washington", 38.9072, -77.0369, -300)),
    ("US", city("San Jose", 37.3382, -121.8863, -480)),
    ("CA", city("Toronto", 43.6532, -79.3832, -300)),
    ("BR", city("Sao Paulo", -23.5505, -46.6333, -180)),
    ("GB", city("London", 51.5074, -0.1278, 0)),
    ("DE", city("Frankfurt", 50.1109, 8.6821, 60)),
    ("FR", city("Paris", 48.8566, 2.3522, 60)),
    ("NL", city("Amsterdam", 52.3676, 4.9041, 60)),
    ("IN", city("Mumbai", 19.0760, 72.8777, 330)),
    ("JP", city("Tokyo", 35.6762, 139.6503, 540)),
    ("SG", city("Singapore", 1.3521, 103.8198, 480)),
    ("AU", city("Sydney", -33.8688, 151.2093, 660)),
];

const ZSCALER: Operator = op(62044, "Zscaler, Inc.");

/// Company names for offices.
static COMPANIES: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Soylent",
    "Cyberdyne",
    "Tyrell",
    "Wonka",
    "Aperture",
    "Massive Dynamic",
    "Vandelay",
    "Pied Piper",
    "Oscorp",
    "Nakatomi",
    "Dunder Mifflin",
    "Monarch",
    "Virtucon",
    "Gekko",
    "Prestige Worldwide",
    "Sterling Cooper",
    "Bluth",
    "Krusty",
    "Duff",
    "Ollivander",
    "Weyland",
    "Blue Sun",
    "Rekall",
];

/// First octets ranges are carved from: public unicast, away from private,
/// CGNAT, loopback, link-local, documentation and benchmarking space, and
/// from `165/8` (the proxy).
static FIRST_OCTETS: &[u8] = &[
    24, 31, 37, 46, 62, 77, 78, 80, 81, 82, 84, 86, 88, 90, 91, 92, 94, 95, 101, 103, 106, 110,
    112, 114, 118, 121, 124, 130, 134, 139, 141, 146, 151, 176, 178, 185, 188, 193, 195, 212,
];

/// A place many users reach the Internet from: an office or a campus.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    /// Index of its network in the plan.
    pub net: usize,
    /// Its public addresses (NAT pool).
    pub pool: Vec<Ipv4Addr>,
    /// Country index.
    pub country: usize,
    /// City index within the country.
    pub city: usize,
    /// Index of the company, for offices.
    pub company: Option<usize>,
}

/// A company: its offices and whether its managed laptops go through the
/// proxy.
#[derive(Debug, Clone)]
pub(crate) struct Company {
    pub offices: Vec<usize>,
    pub zscaler: bool,
}

/// One network's generator-side facts beside its plan entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetInfo {
    pub country: usize,
    pub base: Ipv4Addr,
    pub prefix: u8,
}

/// The world: the plan and indexes into it.
#[derive(Debug)]
pub(crate) struct World {
    pub networks: Vec<Network>,
    pub info: Vec<NetInfo>,
    /// Per country, per city, per ISP: residential network index.
    pub residential: Vec<Vec<Vec<usize>>>,
    /// Per country, per carrier: mobile network index.
    pub mobile: Vec<Vec<usize>>,
    /// Per country: hosting network indexes.
    pub hosting: Vec<Vec<usize>>,
    /// Per country: its proxy points of presence (network indexes).
    pub pops: Vec<Vec<usize>>,
    pub sites: Vec<Site>,
    pub companies: Vec<Company>,
    /// Per country: campus site indexes.
    pub campuses: Vec<Vec<usize>>,
}

/// Hands out ranges from [`FIRST_OCTETS`].
struct Allocator {
    next16: usize,
    next_zscaler: u8,
    /// Current `/16` for sites and how many `/24`s of it are used.
    site_block: Option<(Ipv4Addr, u8)>,
}

impl Allocator {
    fn slash16(&mut self) -> Ipv4Addr {
        let i = self.next16;
        self.next16 += 1;
        let first = FIRST_OCTETS[i % FIRST_OCTETS.len()];
        // Spread second octets so that neighbouring networks do not look
        // sequential; 256 / gcd(37, 256) = 256 distinct values.
        let second = ((i / FIRST_OCTETS.len()) * 37 + 11) % 256;
        Ipv4Addr::new(first, u8::try_from(second).unwrap_or(0), 0, 0)
    }

    fn slash24(&mut self) -> Ipv4Addr {
        let (block, used) = match self.site_block {
            Some((block, used)) if used < 250 => (block, used),
            _ => (self.slash16(), 0),
        };
        self.site_block = Some((block, used + 1));
        let [a, b, _, _] = block.octets();
        Ipv4Addr::new(a, b, used + 1, 0)
    }

    fn zscaler23(&mut self) -> Ipv4Addr {
        let third = self.next_zscaler;
        self.next_zscaler = self.next_zscaler.wrapping_add(2);
        Ipv4Addr::new(165, 225, third, 0)
    }
}

// === impl World ===

impl World {
    /// Builds the world; companies and sites are drawn from `rng`, scaled to
    /// `users`.
    pub(crate) fn build(rng: &mut Rng, users: usize) -> Self {
        let mut alloc = Allocator {
            next16: 0,
            next_zscaler: 8,
            site_block: None,
        };
        let mut w = World {
            networks: Vec::new(),
            info: Vec::new(),
            residential: Vec::new(),
            mobile: Vec::new(),
            hosting: vec![Vec::new(); COUNTRIES.len()],
            pops: vec![Vec::new(); COUNTRIES.len()],
            sites: Vec::new(),
            companies: Vec::new(),
            campuses: vec![Vec::new(); COUNTRIES.len()],
        };
        for (ci, c) in COUNTRIES.iter().enumerate() {
            let mut per_city = Vec::new();
            for (k, cityspec) in c.cities.iter().enumerate() {
                let mut isps = Vec::new();
                for (j, isp) in c.isps.iter().enumerate() {
                    let base = alloc.slash16();
                    let accuracy = [20, 50, 100][(k + j) % 3];
                    isps.push(w.push(
                        ci,
                        base,
                        16,
                        format!("{}-res-{}-{}", c.code, slug(isp.org), slug(cityspec.name)),
                        cityspec,
                        accuracy,
                        *isp,
                        NetworkKind::Residential,
                    ));
                }
                per_city.push(isps);
            }
            w.residential.push(per_city);
            // Geo databases place mobile addresses coarsely: at the
            // country's centre with a 1000 km radius in large countries (as
            // GeoLite2 does for many carrier ranges), at the main gateway
            // city with a wide radius in small ones.
            let (gateway, radius) = match c.centroid {
                Some((lat, lon)) => (city("", lat, lon, 0), 1000),
                None => (c.cities[0], c.mobile_accuracy_km),
            };
            let gateway = &gateway;
            let carriers = c
                .carriers
                .iter()
                .map(|carrier| {
                    let base = alloc.slash16();
                    w.push(
                        ci,
                        base,
                        16,
                        format!("{}-mobile-{}", c.code, slug(carrier.org)),
                        gateway,
                        radius,
                        *carrier,
                        NetworkKind::Mobile,
                    )
                })
                .collect();
            w.mobile.push(carriers);
        }
        for (code, cityspec, operator, accuracy) in HOSTING {
            let ci = country_index(code);
            let base = alloc.slash16();
            let n = w.push(
                ci,
                base,
                16,
                format!(
                    "{code}-hosting-{}-{}",
                    slug(operator.org),
                    slug(cityspec.name)
                ),
                cityspec,
                *accuracy,
                *operator,
                NetworkKind::Hosting,
            );
            w.hosting[ci].push(n);
        }
        for (code, cityspec) in ZSCALER_POPS {
            let ci = country_index(code);
            let base = alloc.zscaler23();
            let n = w.push(
                ci,
                base,
                23,
                format!("zscaler-{}", slug(cityspec.name)),
                cityspec,
                20,
                ZSCALER,
                NetworkKind::ZscalerEgress,
            );
            w.pops[ci].push(n);
        }
        for (code, city_index, operator) in CAMPUSES {
            let ci = country_index(code);
            let cityspec = &COUNTRIES[ci].cities[*city_index];
            let base = alloc.slash24();
            let net = w.push(
                ci,
                base,
                24,
                format!("{code}-campus-{}", slug(operator.org)),
                cityspec,
                10,
                *operator,
                NetworkKind::Nat,
            );
            // One public address for the whole campus.
            let pool = vec![host(base, rng.random_range(2..250))];
            w.campuses[ci].push(w.sites.len());
            w.sites.push(Site {
                net,
                pool,
                country: ci,
                city: *city_index,
                company: None,
            });
        }
        w.build_companies(rng, &mut alloc, users);
        w
    }

    /// Companies with offices in the user countries: about one company per
    /// 40 users, each with an office in its home city and perhaps one or two
    /// abroad; about a third route managed laptops through the proxy.
    fn build_companies(&mut self, rng: &mut Rng, alloc: &mut Allocator, users: usize) {
        let user_countries = user_countries();
        let n = (users / 40).max(user_countries.len() * 2);
        for i in 0..n {
            // Every user country gets companies at home in turn.
            let home = user_countries[i % user_countries.len()];
            let mut countries = vec![home];
            let abroad = rng.random_range(0..3usize);
            for _ in 0..abroad {
                if let Some(c) = user_countries.choose(rng)
                    && !countries.contains(c)
                {
                    countries.push(*c);
                }
            }
            let name = format!(
                "{}{}",
                COMPANIES[i % COMPANIES.len()],
                if i >= COMPANIES.len() {
                    format!(" {}", i / COMPANIES.len() + 1)
                } else {
                    String::new()
                }
            );
            let company = self.companies.len();
            let mut offices = Vec::new();
            for ci in countries {
                let c = &COUNTRIES[ci];
                let city_index = rng.random_range(0..c.cities.len());
                let cityspec = &c.cities[city_index];
                // Business lines: the country's own ISPs or an international
                // carrier.
                let operator = if rng.random_bool(0.5) {
                    *c.isps.choose(rng).unwrap_or(&BUSINESS_CARRIERS[0])
                } else {
                    *BUSINESS_CARRIERS
                        .choose(rng)
                        .unwrap_or(&BUSINESS_CARRIERS[0])
                };
                let base = alloc.slash24();
                let net = self.push(
                    ci,
                    base,
                    24,
                    format!("{}-office-{}-{}", c.code, slug(&name), slug(cityspec.name)),
                    cityspec,
                    [5, 10, 20][rng.random_range(0..3usize)],
                    operator,
                    NetworkKind::Office,
                );
                // A NAT pool of one to four addresses in one /28: many
                // firewalls balance connections over such a pool.
                let size = [1, 1, 2, 4][rng.random_range(0..4usize)];
                let start = 16 * rng.random_range(1..15u8);
                let pool = (0..size).map(|k| host(base, start + 1 + k)).collect();
                offices.push(self.sites.len());
                self.sites.push(Site {
                    net,
                    pool,
                    country: ci,
                    city: city_index,
                    company: Some(company),
                });
            }
            self.companies.push(Company {
                offices,
                zscaler: rng.random_bool(0.35),
            });
        }
    }

    #[allow(clippy::too_many_arguments, reason = "one plan entry's fields")]
    fn push(
        &mut self,
        country: usize,
        base: Ipv4Addr,
        prefix: u8,
        name: String,
        cityspec: &CitySpec,
        accuracy_km: u16,
        operator: Operator,
        kind: NetworkKind,
    ) -> usize {
        self.networks.push(Network {
            name,
            cidr: format!("{base}/{prefix}"),
            country: COUNTRIES[country].code.to_owned(),
            // Country-level locations have no city.
            city: (!cityspec.name.is_empty()).then(|| cityspec.name.to_owned()),
            lat: cityspec.lat,
            lon: cityspec.lon,
            accuracy_km,
            asn: operator.asn,
            org: operator.org.to_owned(),
            kind,
        });
        self.info.push(NetInfo {
            country,
            base,
            prefix,
        });
        self.networks.len() - 1
    }

    /// A random host address of network `net`, avoiding network and
    /// broadcast addresses.
    pub(crate) fn random_ip(&self, rng: &mut Rng, net: usize) -> Ipv4Addr {
        let info = self.info[net];
        let size = 1u32 << (32 - u32::from(info.prefix));
        let offset = rng.random_range(1..size.saturating_sub(1).max(2));
        // Skip .0 and .255 inside larger ranges too: they look odd in logs.
        let offset = match offset & 0xff {
            0 => offset + 1,
            255 => offset - 1,
            _ => offset,
        };
        Ipv4Addr::from(u32::from(info.base) + offset)
    }

    /// A carrier-grade NAT address of mobile network `net`: 64 `/24`s of
    /// four addresses each, so that many subscribers share every address,
    /// as on real carrier NATs.
    pub(crate) fn cgnat_ip(&self, rng: &mut Rng, net: usize) -> Ipv4Addr {
        let [a, b, _, _] = self.info[net].base.octets();
        Ipv4Addr::new(a, b, rng.random_range(0..64), rng.random_range(1..=4))
    }

    /// Six egress nodes of the proxy's point of presence nearest to `near`,
    /// skipping the one that holds `avoid` (for a fail-over).
    pub(crate) fn pop_nodes(
        &self,
        rng: &mut Rng,
        near: (f64, f64),
        avoid: Option<Ipv4Addr>,
    ) -> Vec<Ipv4Addr> {
        let avoid = avoid.and_then(|ip| self.network_of(ip));
        let pop = self
            .pops
            .iter()
            .flatten()
            .copied()
            .filter(|n| Some(*n) != avoid)
            .min_by(|a, b| {
                let d = |n: usize| {
                    let net = &self.networks[n];
                    distance_km(near, (net.lat, net.lon))
                };
                d(*a).total_cmp(&d(*b))
            })
            .unwrap_or(0);
        (0..6).map(|_| self.random_ip(rng, pop)).collect()
    }

    /// The country index of network `net`.
    pub(crate) fn country_of(&self, net: usize) -> usize {
        self.info[net].country
    }

    /// The AS number of network `net`.
    pub(crate) fn asn_of(&self, net: usize) -> u32 {
        self.networks[net].asn
    }

    /// The network holding `ip`, if any (linear: used off the hot path).
    pub(crate) fn network_of(&self, ip: Ipv4Addr) -> Option<usize> {
        // Most specific first: sites are /24s inside nothing else, but be
        // safe.
        self.info
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                let mask = u32::MAX << (32 - u32::from(i.prefix));
                u32::from(ip) & mask == u32::from(i.base)
            })
            .max_by_key(|(_, i)| i.prefix)
            .map(|(n, _)| n)
    }
}

/// Indexes of the countries that have users.
pub(crate) fn user_countries() -> Vec<usize> {
    COUNTRIES
        .iter()
        .enumerate()
        .filter(|(_, c)| c.user_weight > 0)
        .map(|(i, _)| i)
        .collect()
}

fn country_index(code: &str) -> usize {
    COUNTRIES
        .iter()
        .position(|c| c.code == code)
        .unwrap_or_default()
}

fn host(base: Ipv4Addr, last: u8) -> Ipv4Addr {
    let [a, b, c, _] = base.octets();
    Ipv4Addr::new(a, b, c, last)
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 24 {
            break;
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Great-circle distance in km.
pub(crate) fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ranges_are_public_and_disjoint() {
        let mut rng = Rng::seed_from_u64(1);
        let w = World::build(&mut rng, 2000);
        let mut seen: Vec<(u32, u32)> = Vec::new();
        for (n, info) in w.info.iter().enumerate() {
            let ip = info.base;
            assert!(
                !ip.is_private() && !ip.is_loopback() && !ip.is_documentation(),
                "{}",
                w.networks[n].cidr
            );
            assert_ne!(ip.octets()[0], 100, "CGNAT space");
            let start = u32::from(ip);
            let end = start + ((1u32 << (32 - u32::from(info.prefix))) - 1);
            for (s, e) in &seen {
                assert!(end < *s || start > *e, "{} overlaps", w.networks[n].cidr);
            }
            seen.push((start, end));
        }
        // Every site address maps back to its own network.
        for site in &w.sites {
            for ip in &site.pool {
                assert_eq!(w.network_of(*ip), Some(site.net));
            }
        }
    }

    #[test]
    fn world_spans_the_required_geography() {
        let users = user_countries();
        assert!(users.len() >= 8);
        let mut continents: Vec<Continent> =
            users.iter().map(|c| COUNTRIES[*c].continent).collect();
        continents.dedup();
        continents.sort_by_key(|c| *c as u8);
        continents.dedup();
        assert!(continents.len() >= 3);
        assert!((distance_km((51.5074, -0.1278), (40.7128, -74.0060)) - 5570.0).abs() < 30.0);
    }
}
