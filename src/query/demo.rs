//! The demo lab database (`<data dir>/lab.db`): a small biobank (sites, specimen types,
//! participants, visits, specimens with quantities, collection dates and storage positions) so a
//! new user can try a QUERY job at once. Rows come from a fixed-seed generator, so two databases
//! built from the same anchor instant are identical; dates lie in the two years before the anchor
//! (the creation time), so "collected this week" finds rows on the day it is created. The file is
//! written aside and renamed: it appears only complete. Nothing else writes to it.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

/// Indexes, created once the rows are in (faster than keeping them up to date row by row).
const INDEXES: &str = "
CREATE INDEX participants_site ON participants (site_id);
CREATE INDEX visits_participant ON visits (participant_id);
CREATE INDEX specimens_collected_on ON specimens (collected_on);
CREATE INDEX specimens_visit ON specimens (visit_id);
CREATE INDEX specimens_participant ON specimens (participant_id);
CREATE INDEX specimens_site_type ON specimens (site_id, specimen_type_id);
";

/// Version of the generator; stored in `demo_info` so a later change is visible.
pub const GENERATOR_VERSION: i64 = 1;
/// Seed of the generator.
pub const SEED: u64 = 0x001a_bc0d_eb10_ba4c;
/// Participants in the demo (visits and specimens follow from them).
pub const PARTICIPANTS: usize = 2000;

const SCHEMA: &str = "
CREATE TABLE demo_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE sites (
    id      INTEGER PRIMARY KEY,
    code    TEXT NOT NULL UNIQUE,
    name    TEXT NOT NULL,
    city    TEXT NOT NULL,
    country TEXT NOT NULL
);
CREATE TABLE specimen_types (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    specimen_class TEXT NOT NULL,
    unit           TEXT NOT NULL
);
CREATE TABLE participants (
    id             INTEGER PRIMARY KEY,
    ppid           TEXT NOT NULL UNIQUE,
    site_id        INTEGER NOT NULL REFERENCES sites (id),
    sex            TEXT,
    birth_year     INTEGER,
    enrolled_on    TEXT NOT NULL,
    consent_status TEXT NOT NULL
);
CREATE TABLE visits (
    id                 INTEGER PRIMARY KEY,
    participant_id     INTEGER NOT NULL REFERENCES participants (id),
    site_id            INTEGER NOT NULL REFERENCES sites (id),
    visit_name         TEXT NOT NULL,
    visit_date         TEXT NOT NULL,
    clinical_diagnosis TEXT
);
CREATE TABLE specimens (
    id                 INTEGER PRIMARY KEY,
    label              TEXT NOT NULL UNIQUE,
    parent_id          INTEGER REFERENCES specimens (id),
    participant_id     INTEGER NOT NULL REFERENCES participants (id),
    visit_id           INTEGER NOT NULL REFERENCES visits (id),
    site_id            INTEGER NOT NULL REFERENCES sites (id),
    specimen_type_id   INTEGER NOT NULL REFERENCES specimen_types (id),
    lineage            TEXT NOT NULL,
    anatomic_site      TEXT,
    pathology_status   TEXT NOT NULL,
    initial_quantity   REAL NOT NULL,
    available_quantity REAL NOT NULL,
    -- 'YYYY-MM-DD HH:MM:SS' in UTC, comparable with date('now', ...).
    collected_on       TEXT NOT NULL,
    received_on        TEXT NOT NULL,
    status             TEXT NOT NULL,
    -- Storage position; NULL once a specimen has left storage.
    freezer            TEXT,
    rack               INTEGER,
    box                INTEGER,
    position           TEXT
);
CREATE VIEW specimen_details AS
SELECT s.id, s.label, t.name AS specimen_type, t.specimen_class, s.lineage, s.anatomic_site,
       s.pathology_status, s.initial_quantity, s.available_quantity, t.unit, s.collected_on,
       s.received_on, s.status, st.code AS site, p.ppid, v.visit_name, s.freezer, s.rack, s.box,
       s.position
FROM specimens s
JOIN specimen_types t ON t.id = s.specimen_type_id
JOIN sites st ON st.id = s.site_id
JOIN participants p ON p.id = s.participant_id
JOIN visits v ON v.id = s.visit_id;
";

const SITES: &[(&str, &str, &str, &str)] = &[
    ("BOS", "Boston Tissue Bank", "Boston", "United States"),
    ("LYO", "Biobanque de Lyon", "Lyon", "France"),
    ("MUC", "Münchner Kohortenzentrum", "Munich", "Germany"),
    ("OSA", "Osaka Specimen Repository", "Osaka", "Japan"),
    ("TOR", "Toronto Research Biobank", "Toronto", "Canada"),
    (
        "MEL",
        "Melbourne Clinical Biobank",
        "Melbourne",
        "Australia",
    ),
];

/// (name, class, unit, typical quantity)
const TYPES: &[(&str, &str, &str, f64)] = &[
    ("Whole Blood", "Fluid", "ml", 8.0),
    ("Plasma", "Fluid", "ml", 2.0),
    ("Serum", "Fluid", "ml", 2.0),
    ("Buffy Coat", "Cell", "ml", 0.5),
    ("Urine", "Fluid", "ml", 30.0),
    ("Saliva", "Fluid", "ml", 2.0),
    ("Fresh Tissue", "Tissue", "g", 0.4),
    ("Frozen Tissue", "Tissue", "g", 0.2),
    ("FFPE Block", "Tissue", "count", 1.0),
    ("DNA", "Molecular", "µg", 25.0),
];

const VISIT_NAMES: &[&str] = &["Baseline", "Month 6", "Month 12", "Month 18", "Month 24"];
const DIAGNOSES: &[&str] = &[
    "Breast carcinoma",
    "Colorectal adenocarcinoma",
    "Type 2 diabetes",
    "Healthy control",
    "Chronic kidney disease",
    "Non-small cell lung cancer",
    "Prostate adenocarcinoma",
];
const ANATOMIC_SITES: &[&str] = &["Breast", "Colon", "Lung", "Prostate", "Kidney", "Liver"];

/// SplitMix64: tiny, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn timestamp(epoch_seconds: i64) -> String {
    DateTime::<Utc>::from_timestamp(epoch_seconds, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Row counts of a demo database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSummary {
    pub participants: i64,
    pub visits: i64,
    pub specimens: i64,
}

/// Creates the demo database at `target` with dates relative to `anchor_ms`. Fails if `target`
/// exists.
pub fn create_demo_database(target: &Path, anchor_ms: i64) -> anyhow::Result<DemoSummary> {
    if target.exists() {
        anyhow::bail!("{} already exists", target.display());
    }
    let tmp = target.with_extension("db.partial");
    let _ = std::fs::remove_file(&tmp);
    let summary = (|| -> anyhow::Result<DemoSummary> {
        let mut conn = Connection::open(&tmp)?;
        // A scratch file until the rename: no journal needed.
        conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        let summary = fill(&tx, anchor_ms)?;
        tx.execute_batch(INDEXES)?;
        tx.commit()?;
        conn.close().map_err(|(_, e)| e)?;
        Ok(summary)
    })()
    .with_context(|| format!("cannot create the demo database {}", target.display()));
    match summary {
        Ok(summary) => {
            std::fs::rename(&tmp, target)?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn fill(tx: &Connection, anchor_ms: i64) -> rusqlite::Result<DemoSummary> {
    let anchor = anchor_ms.div_euclid(1000);
    let day = 86_400_i64;
    let mut rng = Rng(SEED);

    tx.execute(
        "INSERT INTO demo_info (key, value) VALUES ('description', ?1), ('created_on', ?2),
             ('generator_version', ?3), ('seed', ?4)",
        params![
            "labcron demo biobank: fictitious data for trying saved queries",
            timestamp(anchor),
            GENERATOR_VERSION.to_string(),
            format!("{SEED:#x}")
        ],
    )?;
    for (code, name, city, country) in SITES {
        tx.execute(
            "INSERT INTO sites (code, name, city, country) VALUES (?1, ?2, ?3, ?4)",
            params![code, name, city, country],
        )?;
    }
    for (name, class, unit, _) in TYPES {
        tx.execute(
            "INSERT INTO specimen_types (name, specimen_class, unit) VALUES (?1, ?2, ?3)",
            params![name, class, unit],
        )?;
    }

    let mut participant = tx.prepare(
        "INSERT INTO participants (id, ppid, site_id, sex, birth_year, enrolled_on, consent_status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut visit = tx.prepare(
        "INSERT INTO visits (id, participant_id, site_id, visit_name, visit_date, clinical_diagnosis)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut specimen = tx.prepare(
        "INSERT INTO specimens (id, label, parent_id, participant_id, visit_id, site_id, specimen_type_id,
             lineage, anatomic_site, pathology_status, initial_quantity, available_quantity, collected_on,
             received_on, status, freezer, rack, box, position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )?;

    let mut visit_id = 0_i64;
    let mut specimen_id = 0_i64;
    // Next free storage slot per site: 9x9 boxes, 20 boxes a rack, 10 racks a freezer.
    let mut slots = vec![0_i64; SITES.len()];
    for p in 1..=PARTICIPANTS as i64 {
        let site_index = rng.below(SITES.len() as u64) as usize;
        let site_id = site_index as i64 + 1;
        let site_code = SITES[site_index].0;
        let sex = match rng.below(100) {
            0..=50 => Some("Female"),
            51..=97 => Some("Male"),
            _ => None,
        };
        let birth_year = (!rng.chance(3)).then(|| 1935 + rng.below(71) as i64);
        let enrolled = anchor - rng.below(730) as i64 * day - rng.below(day as u64) as i64;
        let consent = match rng.below(100) {
            0..=91 => "Consented",
            92..=96 => "Withdrawn",
            _ => "Pending",
        };
        participant.execute(params![
            p,
            format!("{site_code}-P{p:05}"),
            site_id,
            sex,
            birth_year,
            &timestamp(enrolled)[..10],
            consent
        ])?;
        let diagnosis = *rng.pick(DIAGNOSES);
        let mut visit_time = enrolled;
        for visit_name in VISIT_NAMES {
            if visit_time > anchor {
                break;
            }
            visit_id += 1;
            let diagnosis_text = (!rng.chance(4)).then_some(diagnosis);
            visit.execute(params![
                visit_id,
                p,
                site_id,
                visit_name,
                &timestamp(visit_time)[..10],
                diagnosis_text
            ])?;
            let specimens_here = 2 + rng.below(3);
            for _ in 0..specimens_here {
                let type_index = rng.below(TYPES.len() as u64) as usize;
                let (_, class, _, typical) = TYPES[type_index];
                let collected = (visit_time + rng.below(4 * 3600) as i64).min(anchor);
                let received = (collected + 600 + rng.below(6 * 3600) as i64).min(anchor);
                let tissue = class == "Tissue";
                let pathology = if tissue {
                    *rng.pick(&["Malignant", "Non-Malignant", "Normal"])
                } else {
                    "Not Specified"
                };
                let anatomic = tissue.then(|| *rng.pick(ANATOMIC_SITES));
                let aliquots = if class == "Fluid" && rng.chance(40) {
                    1 + rng.below(3)
                } else {
                    0
                };
                let mut parent = None;
                for n in 0..=aliquots {
                    specimen_id += 1;
                    let initial = round2(typical * (0.5 + rng.below(100) as f64 / 100.0));
                    let status = match rng.below(100) {
                        0..=84 => "Available",
                        85..=94 => "Distributed",
                        _ => "Consumed",
                    };
                    let available = match status {
                        "Available" => round2(initial * (0.2 + rng.below(81) as f64 / 100.0)),
                        _ => 0.0,
                    };
                    let (freezer, rack, boxno, position) = if status == "Available" {
                        let slot = slots[site_index];
                        slots[site_index] += 1;
                        let cell = slot % 81;
                        let box_index = slot / 81;
                        (
                            Some(format!("{site_code}-FRZ-{}", box_index / 200 + 1)),
                            Some(box_index / 20 % 10 + 1),
                            Some(box_index % 20 + 1),
                            Some(format!(
                                "{}{}",
                                (b'A' + (cell / 9) as u8) as char,
                                cell % 9 + 1
                            )),
                        )
                    } else {
                        (None, None, None, None)
                    };
                    specimen.execute(params![
                        specimen_id,
                        format!("{site_code}-{specimen_id:06}"),
                        parent,
                        p,
                        visit_id,
                        site_id,
                        type_index as i64 + 1,
                        if n == 0 { "New" } else { "Aliquot" },
                        anatomic,
                        pathology,
                        initial,
                        available,
                        timestamp(collected),
                        timestamp(received),
                        status,
                        freezer,
                        rack,
                        boxno,
                        position
                    ])?;
                    if n == 0 {
                        parent = Some(specimen_id);
                    }
                }
            }
            visit_time += (150 + rng.below(60) as i64) * day;
        }
    }
    Ok(DemoSummary {
        participants: PARTICIPANTS as i64,
        visits: visit_id,
        specimens: specimen_id,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut out = Vec::new();
        for table in [
            "sites",
            "specimen_types",
            "participants",
            "visits",
            "specimens",
        ] {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY id"))
                .unwrap();
            let columns = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                let fields: Vec<String> = (0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                out.push(fields.join("|"));
            }
        }
        out
    }

    #[test]
    fn the_demo_is_deterministic_realistic_and_appears_complete() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        let summary = create_demo_database(&a, anchor).unwrap();
        assert_eq!(create_demo_database(&b, anchor).unwrap(), summary);
        assert!(!dir.path().join("a.db.partial").exists());
        assert_eq!(dump(&a), dump(&b));
        assert!(
            summary.specimens > 15_000 && summary.visits > 4_000,
            "{summary:?}"
        );
        assert!(
            create_demo_database(&a, anchor).is_err(),
            "an existing file is kept"
        );

        let conn = Connection::open(&a).unwrap();
        let (latest, earliest, stored, positions): (String, String, i64, i64) = conn
            .query_row(
                "SELECT max(collected_on), min(collected_on), count(freezer),
                        count(DISTINCT freezer || '/' || rack || '/' || box || '/' || position)
                 FROM specimens",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert!(latest.as_str() <= "2026-01-01 00:00:00", "{latest}");
        assert!(
            latest.as_str() >= "2025-12-25",
            "recent rows exist: {latest}"
        );
        assert!(earliest.as_str() >= "2024-01-01", "{earliest}");
        assert_eq!(stored, positions, "storage positions are unique");
        let recent: i64 = conn
            .query_row(
                "SELECT count(*) FROM specimen_details WHERE collected_on >= '2025-12-25'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(recent > 50, "{recent}");
    }
}
