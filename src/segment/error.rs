//! The error of resolving and planning a segment condition.
//!
//! A language error keeps the condition text it came from, so wherever it
//! surfaces (a statement, a refresh, the `segment()` table function) it is
//! shown the same way: the offending line with a caret under the span and
//! the hint. There is one conversion to DataFusion's error type, used by
//! the table function and by everything above this layer.

use datafusion::error::DataFusionError;

use crate::lang::LangError;

/// Why a condition could not be resolved or planned.
#[derive(Debug)]
pub enum SegmentError {
    /// A mistake in the condition: unknown name, wrong type, cycle, ...
    Lang {
        /// The error, with the span of the condition it concerns.
        error: LangError,
        /// The condition text the span points into.
        source: String,
    },
    /// DataFusion could not build the plan, or a table is missing.
    DataFusion(DataFusionError),
}

impl SegmentError {
    /// A language error in `source`.
    pub fn lang(error: LangError, source: &str) -> Self {
        Self::Lang {
            error,
            source: source.to_string(),
        }
    }

    /// The error as text: language errors show the condition with a caret.
    pub fn render(&self) -> String {
        match self {
            Self::Lang { error, source } => {
                format!("in segment condition\n{}", error.render(source))
            }
            Self::DataFusion(e) => e.strip_backtrace(),
        }
    }
}

impl std::fmt::Display for SegmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for SegmentError {}

impl From<DataFusionError> for SegmentError {
    fn from(e: DataFusionError) -> Self {
        Self::DataFusion(e)
    }
}

/// The one conversion: a language error becomes a planning error that
/// carries the rendered condition, caret and hint.
impl From<SegmentError> for DataFusionError {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::DataFusion(e) => e,
            lang @ SegmentError::Lang { .. } => DataFusionError::Plan(lang.render()),
        }
    }
}

/// A failure inside the resolver or planner, before the source text is
/// attached: a language error with its span, or DataFusion's.
#[derive(Debug)]
pub(crate) enum Failure {
    Lang(LangError),
    DataFusion(DataFusionError),
}

impl From<LangError> for Failure {
    fn from(e: LangError) -> Self {
        Self::Lang(e)
    }
}

impl From<DataFusionError> for Failure {
    fn from(e: DataFusionError) -> Self {
        Self::DataFusion(e)
    }
}

impl Failure {
    /// The failure as a [`SegmentError`] about `source`.
    pub(crate) fn in_source(self, source: &str) -> SegmentError {
        match self {
            Self::Lang(e) => SegmentError::lang(e, source),
            Self::DataFusion(e) => SegmentError::DataFusion(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::Span;

    #[test]
    fn language_errors_keep_caret_and_hint_through_datafusion() {
        let error = SegmentError::lang(
            LangError::new("unknown attribute `contry`", Span::new(0, 6))
                .with_hint("did you mean `country`?"),
            "contry = 'France'",
        );
        let df: DataFusionError = error.into();
        assert_eq!(
            df.strip_backtrace(),
            "Error during planning: in segment condition\nerror: unknown attribute `contry`\n  \
             |\n1 | contry = 'France'\n  | ^^^^^^\n  = help: did you mean `country`?"
        );
    }

    #[test]
    fn datafusion_errors_pass_unchanged() {
        let error = SegmentError::from(DataFusionError::Plan("no orders".into()));
        assert_eq!(error.render(), "Error during planning: no orders");
        let df: DataFusionError = error.into();
        assert_eq!(df.strip_backtrace(), "Error during planning: no orders");
    }
}
