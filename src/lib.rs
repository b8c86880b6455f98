//! segql: customer segmentation on Apache DataFusion.
//!
//! The SQL functions live in the [`segql_udfs`] crate (re-exported here);
//! this library adds what a project around them needs: the project file
//! ([`config`]), registering its Parquet tables and running SQL texts on a
//! caller's `SessionContext` ([`session`]), writing results as a table, CSV
//! or JSON ([`output`]), deterministic sample data ([`generate`]), and the
//! error type all of them share ([`error`]).
//! The `segql` binary is a thin command line over these modules.

pub mod config;
pub mod demo;
pub mod error;
pub mod generate;
pub mod lang;
pub mod output;
pub mod progress;
pub mod raster;
pub mod repl;
pub mod rfm_grid;
pub mod segment;
pub mod session;
pub mod store;

pub use config::Config;
pub use error::Error;
pub use output::Format;
pub use segql_udfs;
