//! recofast's core, in pure Rust (no Python): the embedding tables, the online learner, the
//! scoring kernels and the snapshot format. The Python bindings live in `rust/py`.

pub mod config;
pub mod context;
pub mod cooc;
pub mod drift;
pub mod error;
pub mod kernels;
pub mod model;
pub mod prefetch;
pub mod ranker;
pub mod segmented;
pub mod snapshot;
pub mod table;
pub mod text;

pub use config::{Config, EVENT_TYPES};
pub use error::{Error, Result};
pub use model::{Model, Query};

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
