//! Segment membership in SQL, answered from the store:
//! `in_segment(customer_id, 'code')` and `segment_members('code'[, as_of])`,
//! plus the store tables registered by name.
//!
//! Both functions carry what they read, given when they are registered: the
//! store's folder and the committed state loaded then ([`StoreView`]).
//! Nothing is looked up in the session's registry and no function starts
//! an async runtime. The project registers them again whenever the store's
//! committed state moves (its own changes, or another process's), so a
//! query always reads one whole committed state.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DataFusionError, JoinType, Result, ScalarValue, exec_err, plan_err};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility, col, lit,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::SessionContext;

use super::error::StoreError;
use super::tables::{Columns, StoreTable};
use super::{Snapshot, Store, read};
use crate::segment::catalog::StoredSegments;
use crate::segment::table_function::{literal, text_literal};
use crate::time::{AsOf, AsOfArg, Tz, date_from_days};

/// The store as the SQL functions see it: its folder and the committed
/// state loaded when they were registered. A function never reaches back
/// into the session for it; after a change, registering again gives the
/// functions the new state.
#[derive(Debug)]
pub struct StoreView {
    store: Store,
    /// `None` while the folder holds no store yet.
    snapshot: Option<Snapshot>,
    /// What `in_segment` reads: the codes and the membership files.
    members: Arc<MemberFiles>,
    /// The commit log's version on disk when this was loaded.
    loaded_at: Option<u64>,
    /// The time zone whose midnight a date argument means.
    zone: Tz,
}

/// What `in_segment` needs wherever it runs, in this process or on a
/// cluster's executor: the live segment codes and the Parquet files of
/// `segment_membership` that hold open stays, at one committed state. It
/// names files by path (or by URL, for a store in an object store), so it
/// travels in a plan (as JSON) to any process that sees the store's folder
/// at the same path, or reaches its bucket.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MemberFiles {
    /// The store folder and the commit log version: which state this is.
    root: PathBuf,
    log_version: Option<u64>,
    /// The live segment codes.
    codes: BTreeSet<String>,
    /// The membership files that may hold open stays.
    files: Vec<PathBuf>,
    /// Why the store could not be read, for every function that reads it.
    problem: Option<String>,
    /// Current members by code, read on first use.
    #[serde(skip)]
    cache: Mutex<HashMap<String, Arc<HashSet<i64>>>>,
}

impl StoreView {
    /// Loads the newest committed state of `store` (nothing when the
    /// folder holds no store yet), reading on `ctx`.
    pub async fn load(ctx: &SessionContext, store: Store, zone: Tz) -> Result<Self, StoreError> {
        let loaded_at = store.log_version_on_disk();
        let (snapshot, codes) = if store.exists() {
            let snapshot = store.snapshot(ctx).await?;
            let codes = read::live_definitions(ctx, &snapshot)
                .await?
                .into_keys()
                .collect();
            (Some(snapshot), codes)
        } else {
            (None, BTreeSet::new())
        };
        let members = Arc::new(MemberFiles {
            root: store.root().to_path_buf(),
            log_version: snapshot.as_ref().map(|s| s.pinned.log_version),
            codes,
            files: snapshot
                .as_ref()
                .map(|s| s.membership_files.clone())
                .unwrap_or_default(),
            problem: None,
            cache: Mutex::default(),
        });
        Ok(Self {
            store,
            snapshot,
            members,
            loaded_at,
            zone,
        })
    }

    /// A view of a store that cannot be read: every function reading it
    /// fails with `problem`.
    pub fn unreadable(store: Store, problem: StoreError, zone: Tz) -> Self {
        let members = Arc::new(MemberFiles {
            root: store.root().to_path_buf(),
            problem: Some(problem.to_string()),
            ..MemberFiles::default()
        });
        Self {
            zone,
            loaded_at: store.log_version_on_disk(),
            store,
            snapshot: None,
            members,
        }
    }

    /// Whether the store's committed state is still the one loaded.
    pub fn is_current(&self) -> bool {
        self.store.log_version_on_disk() == self.loaded_at
            && self.store.exists() == (self.snapshot.is_some() || self.members.problem.is_some())
    }

    /// The store folder.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The committed state, if the store exists.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The live segment codes.
    pub fn codes(&self) -> &BTreeSet<String> {
        &self.members.codes
    }

    /// The store's segments as a condition sees them.
    pub fn stored_segments(&self) -> Option<StoredSegments> {
        let snapshot = self.snapshot.as_ref()?;
        Some(StoredSegments {
            membership: snapshot.provider(StoreTable::Membership).ok(),
            codes: self.members.codes.clone(),
            overrides: Default::default(),
        })
    }

    fn check_code(&self, code: &str, function: &str) -> Result<()> {
        self.members.check_code(code, function)
    }
}

impl MemberFiles {
    fn check_code(&self, code: &str, function: &str) -> Result<()> {
        if let Some(problem) = &self.problem {
            return plan_err!("{function}: {problem}");
        }
        if self.codes.contains(code) {
            return Ok(());
        }
        let hint =
            match crate::lang::error::did_you_mean(code, self.codes.iter().map(String::as_str)) {
                Some(near) => format!("did you mean '{near}'?"),
                None if self.codes.is_empty() => "the store has no segments yet".into(),
                None => format!(
                    "segments: {}",
                    self.codes.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
        plan_err!("{function}: unknown segment '{code}'; {hint}")
    }

    /// The current members of `code`, read once per view from the
    /// membership files of the snapshot. The read is synchronous (plain
    /// Parquet files of a local folder; objects are fetched whole on the
    /// store's own runtime), so a function call never needs an async
    /// runtime of its own.
    fn members(&self, code: &str) -> Result<Arc<HashSet<i64>>> {
        self.check_code(code, "in_segment")?;
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| DataFusionError::Execution("segment member cache poisoned".into()))?;
        if let Some(members) = cache.get(code) {
            return Ok(Arc::clone(members));
        }
        let mut ids = HashSet::new();
        for path in &self.files {
            read_open_members(path, code, &mut ids)?;
        }
        let ids = Arc::new(ids);
        cache.insert(code.to_string(), Arc::clone(&ids));
        Ok(ids)
    }
}

/// Adds the customers of `file` (a Parquet file of `segment_membership`)
/// with an open stay in `code` to `ids`.
fn read_open_members(file: &PathBuf, code: &str, ids: &mut HashSet<i64>) -> Result<()> {
    let cannot = |e: std::io::Error| {
        DataFusionError::Execution(format!(
            "cannot read segment members from {}: {e}; the segment store may be damaged",
            file.display()
        ))
    };
    // A store in an object store names its files by URL.
    let text = file.to_string_lossy();
    if text.contains("://") {
        let bytes = super::remote::read_url(&text).map_err(cannot)?;
        return add_open_members(ParquetRecordBatchReaderBuilder::try_new(bytes)?, code, ids);
    }
    let opened = std::fs::File::open(file).map_err(cannot)?;
    add_open_members(ParquetRecordBatchReaderBuilder::try_new(opened)?, code, ids)
}

fn add_open_members<T: datafusion::parquet::file::reader::ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<T>,
    code: &str,
    ids: &mut HashSet<i64>,
) -> Result<()> {
    let mask = ProjectionMask::columns(
        builder.parquet_schema(),
        ["segment", "customer_id", "exited_at"],
    );
    let reader = builder.with_projection(mask).build()?;
    for batch in reader {
        let batch = batch?;
        let c = Columns::new(StoreTable::Membership, &batch);
        let to_df = |e: StoreError| DataFusionError::Execution(e.to_string());
        let segments = c.text("segment").map_err(to_df)?;
        let customers = c.int64("customer_id").map_err(to_df)?;
        let exited = c.micros("exited_at").map_err(to_df)?;
        for ((segment, id), exited) in segments.iter().zip(customers).zip(exited) {
            if let (Some(segment), Some(id), None) = (segment, id, exited)
                && segment == code
            {
                ids.insert(id);
            }
        }
    }
    Ok(())
}

/// `in_segment(customer_id, 'code')`.
#[derive(Debug)]
pub struct InSegmentFunc {
    members: Arc<MemberFiles>,
    /// The client's view of the store, for planning the call as a semi
    /// join; a copy decoded on a cluster node has none.
    view: Option<Arc<StoreView>>,
    signature: Signature,
}

/// Two registrations are the same function when they read the same
/// committed state of the same store.
fn state_key(members: &MemberFiles) -> (&PathBuf, Option<u64>) {
    (&members.root, members.log_version)
}

impl PartialEq for InSegmentFunc {
    fn eq(&self, other: &Self) -> bool {
        state_key(&self.members) == state_key(&other.members)
    }
}

impl Eq for InSegmentFunc {}

impl Hash for InSegmentFunc {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state_key(&self.members).hash(state);
    }
}

impl InSegmentFunc {
    pub fn new(view: Arc<StoreView>) -> Self {
        Self {
            members: Arc::clone(&view.members),
            view: Some(view),
            signature: Signature::any(2, Volatility::Stable),
        }
    }

    /// The bytes that carry this function's state inside a plan.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self.members.as_ref())
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    /// The function [`encode`](Self::encode) described, as another
    /// process rebuilds it.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let members: MemberFiles = serde_json::from_slice(bytes).map_err(|e| {
            DataFusionError::Plan(format!(
                "in_segment: cannot read its state from the plan: {e}"
            ))
        })?;
        Ok(Self {
            members: Arc::new(members),
            view: None,
            signature: Signature::any(2, Volatility::Stable),
        })
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
        let members = self.members.members(code)?;
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
    view: Arc<StoreView>,
}

/// The instant an `as_of` argument names, in microseconds: a date means
/// 00:00 UTC of that day.
/// The instant an `as_of` argument names, in microseconds: a date or a
/// text date is its midnight in `zone`, a text time a wall-clock time
/// there (as `--as-of` reads them); a timestamp is the instant it holds
/// (UTC without a zone).
fn instant(expr: &Expr, zone: Tz) -> Result<i64> {
    let value = match literal(expr) {
        Some(ScalarValue::Date32(Some(days))) => {
            date_from_days(*days).map(|day| AsOf::midnight(day, zone).micros())
        }
        Some(ScalarValue::TimestampMicrosecond(Some(v), _)) => Some(*v),
        Some(ScalarValue::TimestampNanosecond(Some(v), _)) => Some(v / 1000),
        Some(ScalarValue::TimestampMillisecond(Some(v), _)) => Some(v * 1000),
        Some(ScalarValue::TimestampSecond(Some(v), _)) => Some(v * 1_000_000),
        _ => text_literal(expr)
            .and_then(AsOfArg::parse)
            .and_then(|arg| arg.resolve(zone))
            .map(AsOf::micros),
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
        let zone = self.view.zone;
        let at = exprs.get(1).map(|e| instant(e, zone)).transpose()?;
        let plan = self.view.members_plan(&code, at)?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

impl StoreView {
    /// The members of `code` (`customer_id`, `entered_at`): the current
    /// ones, or with `at` (microseconds) those whose stay was open then.
    pub fn members_plan(&self, code: &str, at: Option<i64>) -> Result<LogicalPlan> {
        self.check_code(code, "segment_members")?;
        let Some(snapshot) = &self.snapshot else {
            return plan_err!(
                "segment_members: unknown segment '{code}'; the store has no segments yet"
            );
        };
        let membership = snapshot
            .provider(StoreTable::Membership)
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let open = match at {
            // The open stays' partition only.
            None => col(super::MEMBERSHIP_PARTITION)
                .is_null()
                .and(col("exited_at").is_null()),
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
        LogicalPlanBuilder::scan("segment_membership", provider_as_source(membership), None)?
            // Typed exactly: the optimizer rule plans this after type coercion.
            .filter(
                datafusion::logical_expr::cast(col("segment"), DataType::Utf8)
                    .eq(lit(code.to_string()))
                    .and(open),
            )?
            .project(vec![col("customer_id"), col("entered_at")])?
            .build()
    }
}

/// Plans `WHERE in_segment(customer_id, 'code')` as a semi join of the
/// filtered rows with the segment's current members, instead of a call
/// per row: the members are read once, by a plan that can spill and that
/// the optimizer can reorder. A conjunct (not under `OR` or `NOT`) whose
/// code is a text constant of a segment the store has is rewritten; any
/// other use keeps the function (which gives the same answers). Both
/// drop rows whose id is NULL.
#[derive(Debug, Default)]
pub struct InSegmentJoin;

/// The optimizer rule's name (registered once per session).
const IN_SEGMENT_JOIN: &str = "segql_in_segment_semi_join";

impl InSegmentJoin {
    /// The id expression and the members plan of `expr` when it is a
    /// call of segql's `in_segment` that can become a semi join.
    fn semi_join_of(expr: &Expr) -> Option<(Expr, LogicalPlan)> {
        let Expr::ScalarFunction(call) = expr else {
            return None;
        };
        let function =
            (call.func.inner().as_ref() as &dyn std::any::Any).downcast_ref::<InSegmentFunc>()?;
        let [id, code] = call.args.as_slice() else {
            return None;
        };
        let code = text_literal(code)?;
        let view = function.view.as_ref()?;
        view.check_code(code, "in_segment").ok()?;
        let members = view.members_plan(code, None).ok()?;
        Some((id.clone(), members))
    }
}

impl OptimizerRule for InSegmentJoin {
    fn name(&self) -> &str {
        IN_SEGMENT_JOIN
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = plan else {
            return Ok(Transformed::no(plan));
        };
        let mut rest = Vec::new();
        let mut joins = Vec::new();
        for conjunct in split_conjunction_owned(filter.predicate.clone()) {
            match Self::semi_join_of(&conjunct) {
                Some(join) => joins.push(join),
                None => rest.push(conjunct),
            }
        }
        if joins.is_empty() {
            return Ok(Transformed::no(LogicalPlan::Filter(filter)));
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let mut builder = LogicalPlanBuilder::from(Arc::unwrap_or_clone(filter.input));
        for (id, members) in joins {
            let alias = format!(
                "__in_segment_{}",
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let members = LogicalPlanBuilder::from(members)
                .project(vec![col("customer_id")])?
                .alias(alias.as_str())?
                .build()?;
            builder = builder.join_with_expr_keys(
                members,
                JoinType::LeftSemi,
                (
                    vec![datafusion::logical_expr::cast(id, DataType::Int64)],
                    vec![Expr::Column(datafusion::common::Column::new(
                        Some(alias.as_str()),
                        "customer_id",
                    ))],
                ),
                None,
            )?;
        }
        if let Some(rest) = conjunction(rest) {
            builder = builder.filter(rest)?;
        }
        Ok(Transformed::yes(builder.build()?))
    }
}

/// Registers `in_segment`, `segment_members` and, when the store exists,
/// its tables on `ctx`, all reading `view`. Registering again (after a
/// change of the store) replaces them.
pub fn register(ctx: &SessionContext, view: Arc<StoreView>) -> Result<(), StoreError> {
    ctx.register_udf(ScalarUDF::new_from_impl(InSegmentFunc::new(Arc::clone(
        &view,
    ))));
    if !ctx
        .state()
        .optimizers()
        .iter()
        .any(|rule| rule.name() == IN_SEGMENT_JOIN)
    {
        ctx.add_optimizer_rule(Arc::new(InSegmentJoin));
    }
    ctx.register_udtf(
        "segment_members",
        Arc::new(SegmentMembersFunc {
            view: Arc::clone(&view),
        }),
    );
    if let Some(snapshot) = &view.snapshot {
        snapshot.register(ctx)?;
    }
    Ok(())
}
