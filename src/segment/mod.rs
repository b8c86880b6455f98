//! The DataFusion side of the segment language: the tables a condition
//! reads ([`catalog`]), the planner that turns a syntax tree into a
//! `LogicalPlan` ([`planner`]), and the `segment('<condition>')` table
//! function ([`table_function`]).

pub mod catalog;
pub mod planner;
pub mod statements;
pub mod table_function;

pub use catalog::SegmentCatalog;
pub use planner::{AsOf, plan_condition};
