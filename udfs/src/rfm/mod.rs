//! RFM scoring: fixed-threshold buckets, quantile scores within a window
//! partition, three-digit codes, and named customer groups from a map kept
//! as data. Every score runs from 1 (worst) to the number of bins (best).

use datafusion::common::{Result, ScalarValue, plan_err};

use crate::common::scalar_text;

pub mod rfm_bucket;
pub mod rfm_code;
pub mod rfm_quantile;
pub mod rfm_segment;
pub mod segment_map;

/// Which end of a measure scores best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// High values score best (frequency, monetary value).
    High,
    /// Low values score best (recency in days since the last order).
    Low,
}

impl Direction {
    pub(crate) fn from_scalar(name: &str, value: Option<&ScalarValue>) -> Result<Self> {
        let Some(value) = value else {
            return plan_err!("{name}: argument `direction` must be a constant, 'high' or 'low'");
        };
        match scalar_text(name, "direction", value)? {
            Some(text) => match text.to_ascii_lowercase().as_str() {
                "high" => Ok(Self::High),
                "low" => Ok(Self::Low),
                _ => plan_err!(
                    "{name}: argument `direction` must be 'high' (high values score best) \
                     or 'low' (low values score best), got '{text}'"
                ),
            },
            None => plan_err!("{name}: argument `direction` must not be NULL"),
        }
    }
}
