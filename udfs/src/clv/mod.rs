//! Customer-lifetime summaries for CLV models, in the shape of the
//! `lifetimes` package's `summary_data_from_transaction_data`.

pub mod clv_summary;
