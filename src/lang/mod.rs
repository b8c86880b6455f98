//! The segment language: a short condition language for "which customers",
//! compiled in stages `text -> tokens -> syntax tree -> LogicalPlan`. This
//! module holds the stages that know nothing of DataFusion.

pub mod ast;
pub mod error;
pub mod lexer;
pub mod parser;

pub use error::{LangError, Span};
pub use parser::parse;
