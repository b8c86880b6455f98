//! Segment membership in SQL, answered from the store:
//! `in_segment(customer_id, 'code')` and `segment_members('code'[, as_of])`,
//! plus the store tables registered by name.
//!
//! Both functions find the store by its folder, which they carry (not a
//! handle that only the client has), so any process that registers them
//! with the same folder answers the same. They read the newest committed
//! state; a change committed by another process is seen by the next query.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility, col, lit,
};
use datafusion::prelude::SessionContext;

use super::refresh::live_definitions;
use super::{Snapshot, Store, tables};
use crate::error::Error;
use crate::segment::catalog::StoredSegments;
use crate::segment::table_function::{literal, text_literal};

/// The store as the SQL functions read it, with what they have loaded.
#[derive(Debug)]
pub struct StoreReader {
    store: Store,
    /// Wait for another writer in statements run through this session.
    pub wait: bool,
    cache: Mutex<Option<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    log_version: Option<u64>,
    snapshot: Snapshot,
    codes: BTreeSet<String>,
    members: HashMap<String, Arc<HashSet<i64>>>,
}

/// The newest version of a Delta table, read from its log folder (no
/// async, no object store: the store is a local folder).
fn log_version(store: &Store) -> Option<u64> {
    let log = store.root().join(tables::REFRESHES).join("_delta_log");
    std::fs::read_dir(log)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".json")?.parse::<u64>().ok()
        })
        .max()
}

/// Runs `future` to completion on a private runtime in a helper thread, so
/// that synchronous DataFusion callbacks can read the store.
fn block_on<F>(future: F) -> Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(future))
            })
            .join()
    })
    .map_err(|_| DataFusionError::Execution("reading the segment store failed".into()))?
    .map_err(|e| DataFusionError::Execution(format!("cannot start a reader: {e}")))
}

fn to_df(e: Error) -> DataFusionError {
    match e {
        Error::DataFusion(e) => e,
        other => DataFusionError::Plan(other.to_string()),
    }
}

impl StoreReader {
    pub fn new(store: Store, wait: bool) -> Self {
        Self {
            store,
            wait,
            cache: Mutex::new(None),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs `f` on the loaded newest state, loading it first if the store
    /// changed since.
    fn with_loaded<T>(&self, f: impl FnOnce(&mut Loaded) -> Result<T>) -> Result<T> {
        let version = log_version(&self.store);
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| DataFusionError::Execution("store cache poisoned".into()))?;
        let stale = cache.as_ref().is_none_or(|l| l.log_version != version);
        if stale {
            let store = self.store.clone();
            let (snapshot, codes) = block_on(async move {
                let snapshot = store.snapshot().await?;
                let codes = live_definitions(&snapshot).await?.into_keys().collect();
                Ok::<_, Error>((snapshot, codes))
            })?
            .map_err(to_df)?;
            *cache = Some(Loaded {
                log_version: version,
                snapshot,
                codes,
                members: HashMap::new(),
            });
        }
        match cache.as_mut() {
            Some(loaded) => f(loaded),
            None => exec_err!("segment store not loaded"),
        }
    }

    fn check_code(loaded: &Loaded, code: &str, function: &str) -> Result<()> {
        if loaded.codes.contains(code) {
            return Ok(());
        }
        let hint =
            match crate::lang::error::did_you_mean(code, loaded.codes.iter().map(String::as_str)) {
                Some(near) => format!("did you mean '{near}'?"),
                None if loaded.codes.is_empty() => "the store has no segments yet".into(),
                None => format!(
                    "segments: {}",
                    loaded.codes.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
        plan_err!("{function}: unknown segment '{code}'; {hint}")
    }

    /// The current members of `code`.
    fn members(&self, code: &str) -> Result<Arc<HashSet<i64>>> {
        self.with_loaded(|loaded| {
            Self::check_code(loaded, code, "in_segment")?;
            if let Some(members) = loaded.members.get(code) {
                return Ok(Arc::clone(members));
            }
            let snapshot = loaded.snapshot.clone();
            let code_owned = code.to_string();
            let ids = block_on(async move {
                let batches = snapshot
                    .query(&format!(
                        "SELECT customer_id FROM {} WHERE exited_at IS NULL AND segment = '{}'",
                        tables::MEMBERSHIP,
                        code_owned
                    ))
                    .await?;
                let mut ids = HashSet::new();
                for batch in &batches {
                    ids.extend(
                        tables::Columns::new(batch)
                            .int64("customer_id")?
                            .into_iter()
                            .flatten(),
                    );
                }
                Ok::<_, Error>(ids)
            })?
            .map_err(to_df)?;
            let ids = Arc::new(ids);
            loaded.members.insert(code.to_string(), Arc::clone(&ids));
            Ok(ids)
        })
    }

    /// The membership table and live codes at the newest state.
    pub fn stored_segments(&self) -> Result<StoredSegments> {
        self.with_loaded(|loaded| {
            Ok(StoredSegments {
                membership: loaded.snapshot.provider(tables::MEMBERSHIP).ok(),
                codes: loaded.codes.clone(),
                overrides: Default::default(),
            })
        })
    }
}

/// `in_segment(customer_id, 'code')`.
#[derive(Debug)]
pub struct InSegmentFunc {
    reader: Arc<StoreReader>,
    signature: Signature,
}

impl PartialEq for InSegmentFunc {
    fn eq(&self, other: &Self) -> bool {
        self.reader.store == other.reader.store
    }
}

impl Eq for InSegmentFunc {}

impl Hash for InSegmentFunc {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.reader.store.hash(state);
    }
}

impl InSegmentFunc {
    pub fn new(reader: Arc<StoreReader>) -> Self {
        Self {
            reader,
            signature: Signature::any(2, Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for InSegmentFunc {
    fn name(&self) -> &str {
        "in_segment"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !arg_types[0].is_integer() && arg_types[0] != DataType::Null {
            return plan_err!(
                "in_segment: customer_id must be an integer, got {}; call it as \
                 in_segment(customer_id, 'code')",
                arg_types[0]
            );
        }
        if !matches!(
            arg_types[1],
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        ) {
            return plan_err!(
                "in_segment: the segment code must be text such as 'vip', got {}",
                arg_types[1]
            );
        }
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let code = match &args.args[1] {
            ColumnarValue::Scalar(value) => value.try_as_str().flatten(),
            ColumnarValue::Array(_) => None,
        };
        let Some(code) = code else {
            return exec_err!("in_segment: the segment code must be a constant such as 'vip'");
        };
        let members = self.reader.members(code)?;
        let ids: ArrayRef = args.args[0].to_array(args.number_rows)?;
        let ids = cast(&ids, &DataType::Int64)?;
        let ids = ids
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| DataFusionError::Internal("in_segment: cast".into()))?;
        let result: BooleanArray = ids
            .iter()
            .map(|id| id.map(|id| members.contains(&id)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(result)))
    }
}

/// `segment_members('code'[, as_of])`.
#[derive(Debug)]
pub struct SegmentMembersFunc {
    reader: Arc<StoreReader>,
}

impl SegmentMembersFunc {
    pub fn reader(&self) -> &Arc<StoreReader> {
        &self.reader
    }
}

/// The instant an `as_of` argument names, in microseconds: a date means
/// 00:00 UTC of that day.
fn instant(expr: &Expr) -> Result<i64> {
    let text_instant = |text: &str| -> Option<i64> {
        let text = text.trim();
        if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            return Some(super::day_micros(day));
        }
        ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
            .map(|t| t.and_utc().timestamp_micros())
    };
    let value = match literal(expr) {
        Some(ScalarValue::Date32(Some(days))) => Some(i64::from(*days) * 86_400_000_000),
        Some(ScalarValue::TimestampMicrosecond(Some(v), _)) => Some(*v),
        Some(ScalarValue::TimestampNanosecond(Some(v), _)) => Some(v / 1000),
        Some(ScalarValue::TimestampMillisecond(Some(v), _)) => Some(v * 1000),
        Some(ScalarValue::TimestampSecond(Some(v), _)) => Some(v * 1_000_000),
        _ => text_literal(expr).and_then(text_instant),
    };
    match value {
        Some(v) => Ok(v),
        None => plan_err!(
            "segment_members: as_of must be a constant date or time such as '2011-06-01' or \
             TIMESTAMP '2011-06-01 12:00:00'"
        ),
    }
}

impl TableFunctionImpl for SegmentMembersFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "segment_members expects 1 or 2 arguments: segment_members('code'[, as_of]); got {}",
                exprs.len()
            );
        }
        let Some(code) = text_literal(&exprs[0]).map(str::to_string) else {
            return plan_err!("segment_members: the code must be text such as 'vip'");
        };
        let at = exprs.get(1).map(instant).transpose()?;
        let membership = self.reader.with_loaded(|loaded| {
            StoreReader::check_code(loaded, &code, "segment_members")?;
            loaded.snapshot.provider(tables::MEMBERSHIP).map_err(to_df)
        })?;
        let open = match at {
            None => col("exited_at").is_null(),
            Some(at) => {
                let at = lit(ScalarValue::TimestampMicrosecond(
                    Some(at),
                    Some("UTC".into()),
                ));
                col("entered_at")
                    .lt_eq(at.clone())
                    .and(col("exited_at").is_null().or(col("exited_at").gt(at)))
            }
        };
        let plan =
            LogicalPlanBuilder::scan("segment_membership", provider_as_source(membership), None)?
                .filter(col("segment").eq(lit(code)).and(open))?
                .project(vec![col("customer_id"), col("entered_at")])?
                .build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// Registers `in_segment`, `segment_members` and, when the store exists,
/// its tables on `ctx`; returns the reader they share.
pub async fn register(
    ctx: &SessionContext,
    store: Store,
    wait: bool,
) -> Result<Arc<StoreReader>, Error> {
    let reader = Arc::new(StoreReader::new(store, wait));
    ctx.register_udf(ScalarUDF::new_from_impl(InSegmentFunc::new(Arc::clone(
        &reader,
    ))));
    ctx.register_udtf(
        "segment_members",
        Arc::new(SegmentMembersFunc {
            reader: Arc::clone(&reader),
        }),
    );
    if reader.store.exists() {
        reader.store.snapshot().await?.register(ctx)?;
    }
    Ok(reader)
}

/// The store reader registered on `ctx`, if any.
pub fn session_reader(ctx: &SessionContext) -> Option<Arc<StoreReader>> {
    let function = ctx.table_function("segment_members").ok()?;
    let function: &dyn std::any::Any = function.function().as_ref();
    function
        .downcast_ref::<SegmentMembersFunc>()
        .map(|f| Arc::clone(f.reader()))
}
