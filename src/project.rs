//! A project at work: the project file, one DataFusion session, the source
//! tables and saved segments it plans over ([`SegmentCatalog`]), the
//! segment store and the state of it the SQL functions read, the `as_of`
//! day, and whether to wait for another writer. The binary (or any host
//! program) builds one [`Project`] and passes it explicitly; nothing is
//! found again by looking into the session's registry.
//!
//! Everything runs on the project's session, store work included, so a
//! memory limit set on its runtime covers all of it.

use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;

use crate::config::Config;
use crate::error::Error;
use crate::segment::{AsOf, SegmentCatalog, catalog, table_function};
use crate::statements::{self, ParsedStatement, SqlStatement, StatementEnv, StatementResult};
use crate::store::Store;
use crate::store::functions::{self as store_functions, StoreView};

/// A project: configuration, session, catalog, store and `as_of`.
pub struct Project {
    config: Config,
    ctx: SessionContext,
    /// The source tables and saved segment files; `None` without a
    /// `customers` table.
    catalog: Option<SegmentCatalog>,
    store: Store,
    /// The store's committed state as the SQL functions read it.
    view: Arc<StoreView>,
    /// `catalog` with the store's segments at `view`: what conditions plan
    /// with.
    with_stored: Option<SegmentCatalog>,
    as_of: AsOf,
    wait: bool,
}

impl std::fmt::Debug for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Project")
            .field("config", &self.config)
            .field("session", &self.ctx.session_id())
            .field("store", &self.store)
            .field("as_of", &self.as_of)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Project {
    /// Puts `config` to work on `ctx`: segql's functions, the project's
    /// tables, `segment(...)` with the saved segment files and `as_of` as
    /// its default day, and the segment store (its tables, `in_segment`,
    /// `segment_members`). A store that cannot be read does not stop the
    /// project: its functions and statements report why.
    pub async fn open(
        config: Config,
        mut ctx: SessionContext,
        as_of: AsOf,
        wait: bool,
    ) -> Result<Self, Error> {
        segql_udfs::register_all(&mut ctx)?;
        // SQL's rfm_segment names groups by the project's map.
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
            segql_udfs::rfm::rfm_segment::RfmSegmentFunc::new(config.rfm.groups.as_ref().clone()),
        ));
        crate::session::register_tables(&ctx, &config).await?;
        let definitions = match &config.segments_folder {
            Some(folder) => catalog::load_definitions(folder).map_err(Error::Segments)?,
            None => Default::default(),
        };
        let catalog = SegmentCatalog::from_session(&ctx, as_of).await.map(|c| {
            c.with_definitions(definitions)
                .with_rules(config.columns.clone(), config.purchases.clone())
                .with_rfm(config.rfm.clone())
        });
        table_function::register_purchases(&ctx, &config.columns, &config.purchases).await?;
        let store = match &config.store_url {
            // A store in an object store: reached with the [storage]
            // options, through the session too (its tables are read there).
            // The session (and Delta Lake in it) gets one client, the
            // store's own metadata calls another (see `store::remote`).
            Some(url) => {
                let problem = |e: String| Error::Usage(format!("[store] folder {url}: {e}"));
                let open =
                    || crate::storage::store_for(url, &config.storage).map_err(|e| problem(e.0));
                let session_store = open()?;
                let bucket = crate::storage::store_base(url).map_err(|e| problem(e.0))?;
                ctx.register_object_store(&bucket, Arc::clone(&session_store));
                crate::store::remote::remember(url, &session_store);
                Store::at_url(url, open()?)
            }
            None => Store::new(config.store_path()),
        };
        let view = Arc::new(StoreView::load_or_report(&ctx, store.clone(), as_of.zone()).await);
        let mut project = Self {
            config,
            ctx,
            catalog,
            store,
            view,
            with_stored: None,
            as_of,
            wait,
        };
        project.register_store_functions()?;
        Ok(project)
    }

    /// The session everything runs on.
    pub fn ctx(&self) -> &SessionContext {
        &self.ctx
    }

    /// The project file.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The day conditions are evaluated on unless a statement names one.
    pub fn as_of(&self) -> AsOf {
        self.as_of
    }

    /// The segment store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether changes wait for another writer instead of refusing.
    pub fn wait(&self) -> bool {
        self.wait
    }

    /// The store state the SQL functions read.
    pub fn view(&self) -> &StoreView {
        &self.view
    }

    /// The source tables and saved segment files, without store segments.
    pub fn catalog(&self, needed_by: &'static str) -> Result<&SegmentCatalog, Error> {
        self.catalog.as_ref().ok_or(Error::MissingTable {
            table: "customers",
            needed_by,
        })
    }

    /// The catalog a condition plans with: the source tables, saved files
    /// and the store's segments at the loaded state.
    pub fn condition_catalog(&self) -> Option<SegmentCatalog> {
        let catalog = self.catalog.clone()?;
        Some(catalog.with_stored(self.view.stored_segments().map(Arc::new)))
    }

    /// Every segment code a condition may use: saved files and the store.
    pub fn segment_codes(&self) -> Vec<String> {
        let mut codes: Vec<String> = self
            .catalog
            .iter()
            .flat_map(|c| c.definitions.keys().cloned())
            .chain(self.view.codes().iter().cloned())
            .collect();
        codes.sort();
        codes.dedup();
        codes
    }

    /// (Re)registers what reads the store: `in_segment`,
    /// `segment_members`, the store tables, and `segment(...)` with the
    /// store's segments.
    fn register_store_functions(&mut self) -> Result<(), Error> {
        store_functions::register(&self.ctx, Arc::clone(&self.view))?;
        self.with_stored = self.condition_catalog();
        if let Some(catalog) = &self.with_stored {
            table_function::register(&self.ctx, catalog.clone());
        }
        Ok(())
    }

    /// Brings the session up to the store's newest committed state, if it
    /// moved (a change of this project, or of another process).
    pub async fn sync_store(&mut self) -> Result<(), Error> {
        if self.view.is_current() {
            return Ok(());
        }
        self.view = Arc::new(
            StoreView::load_or_report(&self.ctx, self.store.clone(), self.as_of.zone()).await,
        );
        self.register_store_functions()
    }

    /// What statements run with.
    pub fn env(&self) -> StatementEnv<'_> {
        StatementEnv {
            ctx: &self.ctx,
            catalog: self.with_stored.as_ref(),
            store: &self.store,
            as_of: self.as_of,
            wait: self.wait,
        }
    }

    /// Splits `sql` into statements (nothing runs if any does not parse).
    pub fn parse(&self, sql: &str) -> Result<Vec<SqlStatement>, Error> {
        statements::parse_statements(&self.ctx, sql)
    }

    /// Runs one statement, collecting its results; after a store
    /// statement, whatever happened, the session shows the store's
    /// committed state.
    pub async fn run_statement(
        &mut self,
        statement: ParsedStatement,
    ) -> Result<Vec<StatementResult>, Error> {
        self.sync_store().await?;
        let changes_store = matches!(statement, ParsedStatement::Store(_));
        let result = statements::run(&self.env(), statement).await;
        if changes_store {
            self.sync_store().await?;
        }
        result
    }

    /// Plans `sql` when it is exactly one plain query (see
    /// [`statements::query_frame`]), so its rows can be streamed to a file
    /// instead of collected; `None` for anything else, to be run with
    /// [`Project::run_sql`].
    pub async fn single_query(&mut self, sql: &str) -> Result<Option<DataFrame>, Error> {
        let mut parsed = self.parse(sql)?;
        if parsed.len() != 1 {
            return Ok(None);
        }
        self.sync_store().await?;
        let statement = parsed.remove(0).statement;
        Ok(statements::query_frame(&self.ctx, statement).await?.ok())
    }

    /// Runs every statement of `sql` in order, handing each result to
    /// `on_result` as soon as it is complete (so output appears while a
    /// long batch is still running). Stops at the first error; when the
    /// text holds several statements the error says which one failed and
    /// on which line.
    pub async fn run_sql<F>(&mut self, sql: &str, mut on_result: F) -> Result<(), Error>
    where
        F: FnMut(&StatementResult) -> Result<(), Error>,
    {
        let statements = self.parse(sql)?;
        let several = statements.len() > 1;
        for (index, statement) in statements.into_iter().enumerate() {
            let line = statement.line;
            let outcome = match self.run_statement(statement.statement).await {
                Ok(results) => results.iter().try_for_each(&mut on_result),
                Err(e) => Err(e),
            };
            if let Err(source) = outcome {
                return Err(if several && !matches!(source, Error::Write { .. }) {
                    Error::Statement {
                        number: index + 1,
                        line,
                        source: Box::new(source),
                    }
                } else {
                    source
                });
            }
        }
        Ok(())
    }

    /// Runs every statement of `sql` in order like [`Project::run_sql`],
    /// but a statement that fails does not stop the others: its error
    /// (naming the statement and line) is collected and returned. A syntax
    /// error, or a failure to write a result, still stops everything.
    pub async fn run_sql_each<F>(
        &mut self,
        sql: &str,
        mut on_result: F,
    ) -> Result<Vec<Error>, Error>
    where
        F: FnMut(&StatementResult) -> Result<(), Error>,
    {
        let mut errors = Vec::new();
        for (index, statement) in self.parse(sql)?.into_iter().enumerate() {
            let line = statement.line;
            match self.run_statement(statement.statement).await {
                Ok(results) => results.iter().try_for_each(&mut on_result)?,
                Err(source) => errors.push(Error::Statement {
                    number: index + 1,
                    line,
                    source: Box::new(source),
                }),
            }
        }
        Ok(errors)
    }

    /// Runs every statement of `sql` and returns all their results.
    pub async fn collect_sql(&mut self, sql: &str) -> Result<Vec<StatementResult>, Error> {
        let mut results = Vec::new();
        self.run_sql(sql, |result| {
            results.push(result.clone());
            Ok(())
        })
        .await?;
        Ok(results)
    }
}

impl StoreView {
    /// [`StoreView::load`], or, when the store cannot be read, a view that
    /// reports why to every function and statement that reads it.
    async fn load_or_report(ctx: &SessionContext, store: Store, zone: crate::time::Tz) -> Self {
        match Self::load(ctx, store.clone(), zone).await {
            Ok(view) => view,
            Err(problem) => Self::unreadable(store, problem, zone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_carry_their_schema_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml("", dir.path().join("segql.toml")).unwrap();
        let mut project = Project::open(config, SessionContext::new(), AsOf::today(), false)
            .await
            .unwrap();
        let results = project
            .collect_sql("SELECT 1 AS a WHERE false; SELECT 2 AS b")
            .await
            .unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].num_rows(), 0);
        assert_eq!(results[0].schema.field(0).name(), "a");
        assert_eq!(results[1].num_rows(), 1);
    }

    #[tokio::test]
    async fn a_damaged_store_does_not_stop_unrelated_sql() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("segql_store");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("segql_store.json"), "{\"format\": 9}\n").unwrap();
        let config = Config::from_toml("", dir.path().join("segql.toml")).unwrap();
        let mut project = Project::open(config, SessionContext::new(), AsOf::today(), false)
            .await
            .unwrap();
        let results = project.collect_sql("SELECT 1 AS a").await.unwrap();
        assert_eq!(results[0].num_rows(), 1);
        let err = project.collect_sql("SHOW SEGMENTS").await.unwrap_err();
        assert!(
            err.to_string().contains("was written by a newer segql"),
            "{err}"
        );
        let err = project
            .collect_sql("SELECT * FROM segment_members('vip')")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("was written by a newer segql"),
            "{err}"
        );
    }
}
