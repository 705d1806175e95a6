//! Memory density on the host: KSM today (THP and zram to come, issue 5). Every knob lives
//! under a sysfs root that tests point at a temporary directory.

mod ksm;

pub use ksm::{Ksm, KsmSettings, KsmStats};
