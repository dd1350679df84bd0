//! When jobs fire. The driver (`driver::Scheduler`) keeps one tokio-cron-scheduler one-shot per
//! active job (`library`) at the instant `domain::next_fire` computed — the same pure function that
//! gives the API's `nextRunOn` and `/next-runs`, so what the API shows is what happens.

pub mod driver;
pub mod library;

pub use driver::Scheduler;
