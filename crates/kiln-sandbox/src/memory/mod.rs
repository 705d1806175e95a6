//! Memory density on the host: KSM, the transparent-huge-page policy, and zram swap with the
//! paging out of idle sandboxes. Every knob lives under a sysfs root that unit tests point at a
//! temporary directory.

mod knobs;
mod ksm;
mod pageout;
mod procfs;
mod thp;
mod zram;

pub use ksm::{Ksm, KsmSettings, KsmStats};
pub use pageout::{page_out, parent_of, resident_and_swapped};
pub use procfs::{kib_field, proc_kib};
pub use thp::{Thp, ThpPolicy};
pub use zram::{Zram, ZramSettings, ZramStats};
