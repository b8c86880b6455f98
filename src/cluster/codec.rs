//! How segql's state travels in a plan sent to a cluster.
//!
//! Ballista sends logical plans from the client to the scheduler and
//! physical stages from the scheduler to executors. Function names and
//! Parquet listings travel by Ballista's own codecs; these wrap them and
//! add what only segql knows how to rebuild in another process:
//!
//! - store tables ([`PinnedTable`]): their files, by URL;
//! - `in_segment`: the codes and membership files of the committed state
//!   it reads;
//! - `rfm_segment`: the project's group map, as text;
//! - the order state's average of sums: the type of its averages.
//!
//! Every other function travels by name and is found in the receiving
//! node's registry, which holds segql's functions (see [`super::registry`]).

use std::str::FromStr;
use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use segql_udfs::rfm::rfm_segment::RfmSegmentFunc;
use segql_udfs::rfm::segment_map::SegmentMap;

use crate::segment::average::AverageOfSums;
use crate::store::functions::InSegmentFunc;
use crate::store::pinned::PinnedTable;

/// Marks a table provider's bytes as a [`PinnedTable`]'s; anything else
/// goes to Ballista's codec.
const PINNED_TAG: &[u8] = b"segql.pinned_table\n";

/// The state of a segql function that cannot be found by name alone, or
/// `None` for any other function.
fn encode_function(udf: &ScalarUDF) -> Result<Option<Vec<u8>>> {
    let inner = udf.inner().as_ref() as &dyn std::any::Any;
    if let Some(f) = inner.downcast_ref::<InSegmentFunc>() {
        return f.encode().map(Some);
    }
    if let Some(f) = inner.downcast_ref::<RfmSegmentFunc>() {
        return Ok(Some(f.map().to_string().into_bytes()));
    }
    if let Some(f) = inner.downcast_ref::<AverageOfSums>() {
        return Ok(Some(f.output().to_string().into_bytes()));
    }
    Ok(None)
}

/// The function `encode_function` described, or `None` when `name` is
/// not one of those.
fn decode_function(name: &str, bytes: &[u8]) -> Result<Option<Arc<ScalarUDF>>> {
    let text = || {
        std::str::from_utf8(bytes)
            .map_err(|e| DataFusionError::Plan(format!("{name}: its state in the plan: {e}")))
    };
    let udf = match name {
        "in_segment" => ScalarUDF::new_from_impl(InSegmentFunc::decode(bytes)?),
        "rfm_segment" => {
            let map = SegmentMap::parse(text()?)
                .map_err(|e| DataFusionError::Plan(format!("rfm_segment: its group map: {e}")))?;
            ScalarUDF::new_from_impl(RfmSegmentFunc::new(map))
        }
        "__segql_average_of_sums" => {
            let output = DataType::from_str(text()?)?;
            ScalarUDF::new_from_impl(AverageOfSums::with_output(output))
        }
        _ => return Ok(None),
    };
    Ok(Some(Arc::new(udf)))
}

/// `name`'s function as [`decode_function`] rebuilds it, else `other`'s.
fn decode_function_or(
    name: &str,
    buf: &[u8],
    other: impl FnOnce() -> Result<Arc<ScalarUDF>>,
) -> Result<Arc<ScalarUDF>> {
    match decode_function(name, buf)? {
        Some(udf) => Ok(udf),
        None => other(),
    }
}

/// `node`'s state as [`encode_function`] writes it, else as `other` does.
fn encode_function_or(
    node: &ScalarUDF,
    buf: &mut Vec<u8>,
    other: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    match encode_function(node)? {
        Some(bytes) => {
            buf.extend(bytes);
            Ok(())
        }
        None => other(buf),
    }
}

/// The logical codec of segql's client and scheduler.
#[derive(Debug, Default)]
pub struct SegqlLogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for SegqlLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.strip_prefix(PINNED_TAG) {
            Some(rest) => Ok(Arc::new(PinnedTable::decode(rest, schema)?)),
            None => self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(pinned) = node.downcast_ref::<PinnedTable>() {
            buf.extend_from_slice(PINNED_TAG);
            buf.extend(pinned.encode()?);
            return Ok(());
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_function_or(name, buf, || self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_function_or(node, buf, |buf| self.inner.try_encode_udf(node, buf))
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

/// The physical codec of segql's scheduler and executors.
#[derive(Debug, Default)]
pub struct SegqlPhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for SegqlPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_function_or(name, buf, || self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_function_or(node, buf, |buf| self.inner.try_encode_udf(node, buf))
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}
