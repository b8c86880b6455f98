//! segql: customer segmentation on Apache DataFusion.
//!
//! The SQL functions live in the [`segql_udfs`] crate (re-exported here).
//! This library is layered, each layer using only those below it:
//!
//! ```text
//! time, diagnostic        days and instants; how DataFusion errors read
//! segql-udfs              the SQL functions (a crate of its own)
//! lang                    text -> tokens -> syntax tree (no DataFusion)
//! segment                 catalog, columns (mapping, purchase rule), rfm
//!                         (scheme), resolver (tree -> resolved condition),
//!                         planner (-> LogicalPlan), segment graph, segment()
//! store                   Delta Lake tables, commit and recovery, reads as
//!                         domain values, in_segment / segment_members
//! error                   the crate's error, gathering the layers' errors
//! chart                   plotters pictures to PNG and SVG, bundled font
//! state_folder,           files a store keeps between refreshes;
//!   order_state,          per-customer order sums folded from new order
//!   bought_state,         files; purchase lines kept for bought(...),
//!   events_state,         events kept for did(...);
//!   refresh               the engine: evaluate, diff, one atomic change
//! statements              SQL and segment statements, result tables
//! config, session,        the project file, table registration and column
//!   storage, project      checks, object stores, the Project (config,
//!                         session, catalog, store, as_of)
//! output, repl, demo,     printing, the prompt, the main job, RFM grid,
//!   rfm_grid, charts, ... charts, sample data
//! ```
//!
//! The `segql` binary parses arguments and dispatches to [`exec`].

pub mod bought_state;
pub mod case_blind;
pub mod chart;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod dense_aggregate;
pub mod diagnostic;
pub mod error;
pub mod events_state;
pub mod exec;
pub mod generate;
pub mod held_rows;
pub mod history_chart;
pub mod key_set_join;
pub mod lang;
pub mod lookup_join;
pub mod moved_stays;
pub mod observe;
pub(crate) mod operator;
pub mod order_state;
pub mod ordered_lookup;
pub mod output;
pub mod progress;
pub mod project;
pub mod refresh;
pub mod repl;
pub mod rfm_grid;
pub mod segment;
pub mod segment_places;
pub mod server;
pub mod session;
pub mod state_folder;
pub mod statements;
pub mod storage;
pub mod store;
#[cfg(test)]
pub(crate) mod test_tables;
pub mod time;

pub use config::Config;
pub use error::Error;
pub use output::Format;
pub use project::Project;
pub use segql_udfs;
