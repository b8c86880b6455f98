//! One criterion group per segql function, each beside a built-in DataFusion
//! function or expression doing similar work, over the same seeded data:
//! 64 batches of 8192 rows in one partition. Compare the two lines of a
//! group (a ratio measured in one run), not absolute times.
//!
//! Run: `cargo bench --bench functions` (or add a group name as a filter).

// A benchmark may stop at the first failure.
#![allow(clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::runtime::Runtime;

const BATCH_ROWS: usize = 8192;
const BATCHES: usize = 64;

/// A small deterministic generator (xorshift64*), so every run scores the
/// same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

fn table() -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("d", DataType::Date32, true),
        Field::new("v", DataType::Float64, true),
        Field::new("r", DataType::Int32, false),
        Field::new("f", DataType::Int32, false),
        Field::new("m", DataType::Int32, false),
    ]));
    let mut rng = Rng(0x5E6_9717);
    let batches = (0..BATCHES)
        .map(|_| {
            let ids: Int64Array = (0..BATCH_ROWS).map(|_| rng.below(50_000)).collect();
            // Days from 1950 to 2024, about 1% NULL.
            let dates: Date32Array = (0..BATCH_ROWS)
                .map(|_| (rng.below(100) > 0).then(|| -7305 + rng.below(27_000) as i32))
                .collect();
            let values: Float64Array = (0..BATCH_ROWS)
                .map(|_| (rng.below(100) > 0).then(|| rng.below(100_000) as f64 / 100.0))
                .collect();
            let score = |rng: &mut Rng| -> Int32Array {
                (0..BATCH_ROWS).map(|_| 1 + rng.below(5) as i32).collect()
            };
            let columns: Vec<ArrayRef> = vec![
                Arc::new(ids),
                Arc::new(dates),
                Arc::new(values),
                Arc::new(score(&mut rng)),
                Arc::new(score(&mut rng)),
                Arc::new(score(&mut rng)),
            ];
            RecordBatch::try_new(Arc::clone(&schema), columns)
        })
        .collect::<Result<Vec<_>, _>>()
        .expect("bench data");
    MemTable::try_new(schema, vec![batches]).expect("bench table")
}

fn context() -> SessionContext {
    let mut ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(BATCH_ROWS),
    );
    segql_udfs::register_all(&mut ctx).expect("register segql functions");
    ctx.register_table("t", Arc::new(table()))
        .expect("register table");
    ctx
}

/// Each group: (name, segql query, built-in query).
const PAIRS: &[(&str, &str, &str)] = &[
    (
        "in_yearly_window",
        "SELECT count(*) FROM t WHERE in_yearly_window(d, '07-25', '09-28')",
        "SELECT count(*) FROM t WHERE date_part('month', d) * 100 + date_part('day', d) BETWEEN 725 AND 928",
    ),
    (
        "days_to_anniversary",
        "SELECT max(days_to_anniversary(d, DATE '2024-06-01')) FROM t",
        "SELECT max(date_part('doy', d)) FROM t",
    ),
    (
        "anniversary_between",
        "SELECT count(*) FROM t WHERE anniversary_between(d, DATE '2024-06-01', DATE '2024-06-04')",
        "SELECT count(*) FROM t WHERE date_part('doy', d) BETWEEN 153 AND 156",
    ),
    (
        "rfm_bucket",
        "SELECT max(rfm_bucket(v, [50, 100], 'high')) FROM t",
        "SELECT max(CASE WHEN v >= 100 THEN 3 WHEN v >= 50 THEN 2 ELSE 1 END) FROM t",
    ),
    (
        "rfm_quantile",
        "SELECT max(s) FROM (SELECT rfm_quantile(v, 5, 'high') OVER () AS s FROM t)",
        "SELECT max(s) FROM (SELECT ntile(5) OVER (ORDER BY v) AS s FROM t)",
    ),
    (
        "rfm_code",
        "SELECT max(rfm_code(r, f, m)) FROM t",
        "SELECT max(concat(r, f, m)) FROM t",
    ),
    (
        "rfm_segment",
        "SELECT max(rfm_segment(r, f)) FROM t",
        "SELECT max(CASE WHEN r >= 4 AND f >= 4 THEN 'Champions' WHEN r <= 2 THEN 'At Risk' ELSE 'Other' END) FROM t",
    ),
    (
        "clv_summary",
        "SELECT count(s) FROM (SELECT clv_summary(d, v, DATE '2024-12-31') AS s FROM t GROUP BY customer_id)",
        "SELECT count(s) FROM (SELECT sum(v) AS s FROM t GROUP BY customer_id)",
    ),
];

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    let ctx = context();
    for (name, ours, builtin) in PAIRS {
        let mut group = c.benchmark_group(*name);
        group.sample_size(20);
        for (label, sql) in [("segql", ours), ("builtin", builtin)] {
            group.bench_function(label, |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let df = ctx.sql(sql).await.expect("plan");
                        df.collect().await.expect("run")
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
