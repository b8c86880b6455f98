//! The DataFusion side of the segment language, in two stages after the
//! parser: the resolver ([`resolve`]) looks every name of a syntax tree up
//! in the tables a condition reads ([`catalog`]) and checks its literals,
//! and the planner ([`planner`]) turns the resolved condition into a
//! `LogicalPlan`. [`graph`] knows which segments refer to which, and
//! [`table_function`] offers `segment('<condition>')` in SQL.

pub mod average;
pub mod catalog;
pub mod columns;
pub mod error;
pub mod graph;
pub mod planner;
pub mod resolve;
pub mod rfm;
pub mod rfm_cuts;
pub mod table_function;
pub mod utc_day;

pub use crate::time::AsOf;
pub use catalog::SegmentCatalog;
pub use error::SegmentError;
pub use graph::SegmentGraph;
pub use planner::{plan_condition, plan_text};
