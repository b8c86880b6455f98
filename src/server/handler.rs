//! One connection of `segql serve`: its own project (session, memory pool,
//! store view), SQL answered by `datafusion-postgres` on that session, and
//! segql's segment statements answered here, both under the statement
//! timeout, cancel requests and the user's role.
//!
//! Over the simple protocol a text may mix SQL and segment statements, and
//! each statement's tables come back in order (`PREVIEW SEGMENT` gives two:
//! the count and the first rows). Over the extended protocol (drivers such as
//! psycopg and JDBC) a segment statement gives its last table: a read-only
//! one runs when it is parsed, so its columns can be described, and the rows
//! are sent on execute; one that changes the store runs on execute only.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement as SqlStatement};
use datafusion_postgres::DfSessionService;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{
    FieldInfo, QueryResponse, Response, SendableRowStream, Tag,
};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, METADATA_USER,
    PgWireServerHandlers, Type,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::types::format::FormatOptions;
use futures::{Sink, Stream, stream};
use tokio::sync::{Mutex, OnceCell, watch};
use tokio::time::Instant;

use super::auth::Users;
use crate::config::{Config, ServerRole};
use crate::error::Error;
use crate::exec;
use crate::project::Project;
use crate::segment::AsOf;
use crate::statements::lifecycle::{StoreStatement, result_fields};
use crate::statements::{self, ParsedStatement, StatementResult};

/// What datafusion-postgres keeps for a prepared statement: the text, and
/// the parsed statement with its plan. A segment statement is kept as its
/// text with no plan.
type WireStatement = (String, Option<(SqlStatement, LogicalPlan)>);

/// The client's `SET statement_timeout`, as datafusion-postgres records it.
const METADATA_STATEMENT_TIMEOUT: &str = "statement_timeout_ms";

/// One line on standard error, with the time: the server's log.
pub(crate) fn log(message: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    eprintln!("{now} segql serve: {message}");
}

/// What every connection shares: the project file and the server's rules.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    /// The day conditions are evaluated on; `None`: each connection's
    /// start.
    pub as_of: Option<AsOf>,
    pub wait: bool,
    pub users: Arc<Users>,
    pub cancels: Cancels,
}

/// The connections that can be cancelled, by process id: a cancel request
/// with the right secret bumps the connection's counter, which its running
/// statement watches (while it plans and while its rows are sent).
#[derive(Debug, Default)]
pub(crate) struct Cancels {
    connections: StdMutex<HashMap<i32, Cancellable>>,
}

/// A connection's secret key and the counter its statements watch.
type Cancellable = (Vec<u8>, watch::Sender<u64>);

impl Cancels {
    fn register(&self, pid: i32, secret: Vec<u8>) -> watch::Receiver<u64> {
        let (sender, receiver) = watch::channel(0);
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(pid, (secret, sender));
        }
        receiver
    }

    fn forget(&self, pid: i32) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.remove(&pid);
        }
    }

    /// Cancels the running statement of `pid`, if `secret` is its key.
    fn cancel(&self, pid: i32, secret: &[u8]) -> bool {
        let Ok(connections) = self.connections.lock() else {
            return false;
        };
        match connections.get(&pid) {
            Some((key, sender)) if key.as_slice() == secret => {
                sender.send_modify(|n| *n += 1);
                true
            }
            _ => false,
        }
    }
}

/// The handlers of one connection.
pub(crate) struct Handlers {
    pub connection: Arc<Connection>,
    pub startup: Arc<Gate>,
    pub cancel: Arc<CancelAll>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.connection)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.connection)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(ErrorLog)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Startup: TLS when required, then a password (SCRAM-SHA-256) when users
/// are configured, or none (loopback only) when not.
pub(crate) struct Gate {
    pub require_tls: bool,
    /// `Some(max_connections)` when the server is full: the connection is
    /// refused at its start.
    pub full: Option<usize>,
    pub check: Check,
}

pub(crate) enum Check {
    Trust(Trust),
    Password(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

/// No password: the connection is registered for cancel requests.
pub(crate) struct Trust(pub Arc<ConnectionManager>);

impl NoopStartupHandler for Trust {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.0))
    }
}

#[async_trait]
impl StartupHandler for Gate {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let (Some(max), PgWireFrontendMessage::Startup(_)) = (self.full, &message) {
            return Err(user_error(
                "FATAL",
                "53300",
                format!(
                    "sorry, too many clients already (max_connections = {max}); try again \
                     later"
                ),
            ));
        }
        if self.require_tls
            && !client.is_secure()
            && matches!(message, PgWireFrontendMessage::Startup(_))
        {
            log(&format!(
                "refused a connection without TLS from {}",
                client.socket_addr()
            ));
            return Err(user_error(
                "FATAL",
                "28000",
                "this segql server accepts only TLS connections; connect with sslmode=require"
                    .into(),
            ));
        }
        match &self.check {
            Check::Trust(trust) => trust.on_startup(client, message).await,
            Check::Password(password) => password.on_startup(client, message).await,
        }
    }
}

/// Cancel requests: the statement running on the connection stops, its
/// memory is freed, and the client gets SQLSTATE 57014.
pub(crate) struct CancelAll {
    pub shared: Arc<Shared>,
    pub manager: Arc<ConnectionManager>,
}

#[async_trait]
impl CancelHandler for CancelAll {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.manager.cancel(request.pid, &request.secret_key).await;
        let secret = request.secret_key.to_bytes();
        if self.shared.cancels.cancel(request.pid, &secret) {
            log(&format!("cancel request for connection {}", request.pid));
        }
    }
}

/// Logs failed logins (the user and address, never the password), and
/// names the user in the refusal as PostgreSQL does.
struct ErrorLog;

impl ErrorHandler for ErrorLog {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let failed_login = match error {
            PgWireError::InvalidPassword(_) => true,
            PgWireError::UserError(info) => info.code == "28P01",
            _ => false,
        };
        if failed_login {
            let user = client
                .metadata()
                .get(METADATA_USER)
                .map_or("", String::as_str);
            log(&format!(
                "password authentication failed for user \"{user}\" from {}",
                client.socket_addr().ip()
            ));
            *error = user_error(
                "FATAL",
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            );
        }
    }
}

/// One connection: its project, opened at its first statement.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    session: OnceCell<Session>,
    /// Results of read-only segment statements run when parsed (extended
    /// protocol), by statement text, until executed.
    described: StdMutex<HashMap<String, Vec<StatementResult>>>,
    /// The columns of the segment statements described so far, by text,
    /// for a prepared statement executed again.
    schemas: StdMutex<HashMap<String, SchemaRef>>,
    /// This connection's cancel counter, once registered.
    cancel: OnceLock<(i32, watch::Receiver<u64>)>,
    parser: Arc<WireParser>,
    /// The client's socket, to notice when it goes away mid-statement.
    peer: Option<Arc<std::net::TcpStream>>,
}

/// The connection's project and the SQL service over its session.
struct Session {
    project: Mutex<Project>,
    sql: Arc<DfSessionService>,
}

/// Parses statements for the extended protocol.
pub(crate) struct WireParser {
    connection: std::sync::Weak<Connection>,
}

impl Connection {
    pub(crate) fn new(shared: Arc<Shared>, peer: Option<std::net::TcpStream>) -> Arc<Self> {
        Arc::new_cyclic(|weak| Self {
            peer: peer.map(Arc::new),
            shared,
            session: OnceCell::new(),
            described: StdMutex::new(HashMap::new()),
            schemas: StdMutex::new(HashMap::new()),
            cancel: OnceLock::new(),
            parser: Arc::new(WireParser {
                connection: std::sync::Weak::clone(weak),
            }),
        })
    }

    /// The project, opened on first use with the connection's own memory
    /// pool.
    async fn session(&self) -> PgWireResult<&Session> {
        self.session
            .get_or_try_init(|| async {
                let shared = &self.shared;
                // information_schema as well as pg_catalog: some drivers
                // list tables and columns through it.
                let ctx = exec::session_with(
                    exec::session_config()?.with_information_schema(true),
                    shared.config.server.query_memory_limit,
                )?;
                let as_of = shared
                    .as_of
                    .unwrap_or_else(|| AsOf::now(shared.config.zone()));
                let project = Project::open(shared.config.clone(), ctx, as_of, shared.wait).await?;
                setup_pg_catalog(project.ctx(), "datafusion", EmptyContextProvider)
                    .map_err(|e| Error::DataFusion(*e))?;
                let sql = Arc::new(DfSessionService::new(Arc::new(project.ctx().clone())));
                Ok::<_, Error>(Session {
                    project: Mutex::new(project),
                    sql,
                })
            })
            .await
            .map_err(|e| error_response(&e))
    }

    /// The user's role; a user not configured cannot get here (the
    /// password check refuses it first).
    fn role<C: ClientInfo>(&self, client: &C) -> PgWireResult<(String, ServerRole)> {
        let user = client.metadata().get(METADATA_USER).cloned();
        match self.shared.users.role(user.as_deref()) {
            Some(role) => Ok((user.unwrap_or_default(), role)),
            None => Err(user_error(
                "FATAL",
                "28000",
                format!("no segql user \"{}\"", user.unwrap_or_default()),
            )),
        }
    }

    /// When the statement starting now must end: the server's timeout, or
    /// the client's `SET statement_timeout` when shorter.
    fn deadline<C: ClientInfo>(&self, client: &C) -> Option<Instant> {
        let client_limit = client
            .metadata()
            .get(METADATA_STATEMENT_TIMEOUT)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let limit = match (self.shared.config.server.statement_timeout, client_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        limit.map(|limit| Instant::now() + limit)
    }

    /// A future that ends with the error to send when the statement
    /// started now must stop: cancelled, or past its deadline.
    fn stop<C: ClientInfo>(&self, client: &C) -> StopSignal {
        let deadline = self.deadline(client);
        let (pid, secret) = client.pid_and_secret_key();
        let (_, receiver) = self.cancel.get_or_init(|| {
            (
                pid,
                self.shared
                    .cancels
                    .register(pid, secret.to_bytes().to_vec()),
            )
        });
        let mut receiver = receiver.clone();
        receiver.borrow_and_update();
        let peer = self.peer.clone();
        Box::pin(async move {
            let cancelled = async move {
                tokio::select! {
                    changed = receiver.changed() => if changed.is_err() {
                        std::future::pending::<()>().await;
                    },
                    () = gone(peer) => {}
                }
            };
            match deadline {
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => user_error(
                        "ERROR",
                        "57014",
                        "canceling statement due to statement timeout".into(),
                    ),
                    () = cancelled => canceled(),
                },
                None => {
                    cancelled.await;
                    canceled()
                }
            }
        })
    }

    /// Runs one segment statement on the project.
    async fn run_segql(
        &self,
        session: &Session,
        statement: ParsedStatement,
    ) -> PgWireResult<Vec<StatementResult>> {
        let mut project = session.project.lock().await;
        project
            .run_statement(statement)
            .await
            .map_err(|e| error_response(&e))
    }

    /// The connection's store view brought up to date before SQL runs.
    async fn sync(&self, session: &Session) -> PgWireResult<()> {
        session
            .project
            .lock()
            .await
            .sync_store()
            .await
            .map_err(|e| error_response(&e))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some((pid, _)) = self.cancel.get() {
            self.shared.cancels.forget(*pid);
        }
    }
}

type StopSignal = Pin<Box<dyn Future<Output = PgWireError> + Send>>;

/// How often a running statement checks that its client is still there.
const PEER_CHECK: Duration = Duration::from_secs(1);

/// Ends when the client has closed its connection (checked every
/// [`PEER_CHECK`] without reading anything), so a statement whose client
/// left stops instead of running to its end; never ends without a socket.
async fn gone(peer: Option<Arc<std::net::TcpStream>>) {
    let Some(peer) = peer else {
        return std::future::pending().await;
    };
    let mut byte = [0u8; 1];
    loop {
        tokio::time::sleep(PEER_CHECK).await;
        match peer.peek(&mut byte) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if let Ok(address) = peer.peer_addr() {
        log(&format!(
            "the client at {address} closed its connection during a statement; stopped it"
        ));
    }
}

/// Runs `work` unless `stop` ends first.
async fn until_stopped<T>(
    work: impl Future<Output = PgWireResult<T>>,
    stop: StopSignal,
) -> PgWireResult<T> {
    tokio::select! {
        result = work => result,
        error = stop => Err(error),
    }
}

/// A response whose rows stop (with the signal's error) when `stop` ends.
fn guarded(response: Response, stop: StopSignal, limit: Option<usize>) -> Response {
    match response {
        Response::Query(mut query) => {
            let rows = std::mem::replace(query.data_rows(), Box::pin(stream::empty()));
            let mut guarded = QueryResponse::new(
                query.row_schema(),
                Guarded {
                    rows,
                    stop,
                    limit,
                    done: false,
                },
            );
            guarded.set_command_tag(query.command_tag());
            Response::Query(guarded)
        }
        other => other,
    }
}

/// Rows that end with an error when their stop signal fires. Dropping the
/// inner stream stops the query and frees its memory.
struct Guarded {
    rows: SendableRowStream,
    stop: StopSignal,
    /// The connection's memory limit, for the hint of an error.
    limit: Option<usize>,
    done: bool,
}

impl Stream for Guarded {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(error) = self.stop.as_mut().poll(cx) {
            self.done = true;
            self.rows = Box::pin(stream::empty());
            return Poll::Ready(Some(Err(error)));
        }
        match self.rows.as_mut().poll_next(cx) {
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                Poll::Ready(Some(Err(with_memory_hint(error, self.limit))))
            }
            other => other,
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session().await?;
        let (user, role) = self.role(client)?;
        let stop = self.stop(client);
        let limit = self.shared.config.server.query_memory_limit;
        let responses = until_stopped(self.simple(client, session, &user, role, query), stop)
            .await
            .map_err(|e| with_memory_hint(e, limit))?;
        Ok(responses
            .into_iter()
            .map(|response| guarded(response, self.stop(client), limit))
            .collect())
    }
}

impl Connection {
    async fn simple<C>(
        &self,
        client: &mut C,
        session: &Session,
        user: &str,
        role: ServerRole,
        query: &str,
    ) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let parsed = {
            let project = session.project.lock().await;
            statements::parse_statements(project.ctx(), query).ok()
        };
        let has_segql = parsed.as_ref().is_some_and(|statements| {
            statements
                .iter()
                .any(|s| !matches!(s.statement, ParsedStatement::Sql(_)))
        });
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        match parsed {
            Some(parsed) if has_segql => {
                let mut responses = Vec::new();
                for statement in parsed {
                    match statement.statement {
                        ParsedStatement::Sql(sql) => {
                            if role == ServerRole::ReadOnly && !df_read_only(&sql) {
                                return Err(read_only_error(user, &sql.to_string()));
                            }
                            self.sync(session).await?;
                            responses.extend(
                                SimpleQueryHandler::do_query(
                                    &*session.sql,
                                    client,
                                    &sql.to_string(),
                                )
                                .await?,
                            );
                        }
                        other => {
                            check_segql(user, role, &other)?;
                            for result in self.run_segql(session, other).await? {
                                responses.push(encode(&result, &Format::UnifiedText, &options)?);
                            }
                        }
                    }
                }
                Ok(responses)
            }
            _ => {
                if role == ServerRole::ReadOnly {
                    // Unparsable text goes on, for DataFusion's own error.
                    if let Ok(statements) = PostgresCompatibilityParser::new().parse(query)
                        && let Some(refused) = statements.iter().find(|s| !sql_read_only(s))
                    {
                        return Err(read_only_error(user, &refused.to_string()));
                    }
                }
                self.sync(session).await?;
                SimpleQueryHandler::do_query(&*session.sql, client, query).await
            }
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = WireStatement;
    type QueryParser = WireParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session().await?;
        let stop = self.stop(client);
        let limit = self.shared.config.server.query_memory_limit;
        let response = self
            .extended(client, session, portal, max_rows, stop)
            .await
            .map_err(|e| with_memory_hint(e, limit))?;
        Ok(guarded(response, self.stop(client), limit))
    }
}

impl Connection {
    async fn extended<C>(
        &self,
        client: &mut C,
        session: &Session,
        portal: &Portal<WireStatement>,
        max_rows: usize,
        stop: StopSignal,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = WireStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (text, plan) = &portal.statement.statement;
        Ok(if plan.is_some() {
            until_stopped(
                async {
                    self.sync(session).await?;
                    ExtendedQueryHandler::do_query(&*session.sql, client, portal, max_rows).await
                },
                stop,
            )
            .await?
        } else {
            let cached = self
                .described
                .lock()
                .ok()
                .and_then(|mut described| described.remove(text));
            let results = match cached {
                Some(results) => results,
                None => {
                    let statement = segql_statement(&*session.project.lock().await, text)?;
                    let (user, role) = self.role(client)?;
                    check_segql(&user, role, &statement)?;
                    until_stopped(self.run_segql(session, statement), stop).await?
                }
            };
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            match results.last() {
                Some(last) => encode(last, &portal.result_column_format, &options)?,
                None => Response::EmptyQuery,
            }
        })
    }
}

#[async_trait]
impl QueryParser for WireParser {
    type Statement = WireStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let connection = self.connection()?;
        let session = connection.session().await?;
        let (user, role) = connection.role(client)?;
        let single = {
            let project = session.project.lock().await;
            segql_statement(&project, sql).ok()
        };
        if let Some(statement) = single {
            check_segql(&user, role, &statement)?;
            if describe_by_running(&statement) {
                let results = until_stopped(
                    connection.run_segql(session, statement),
                    connection.stop(client),
                )
                .await?;
                if let (Some(last), Ok(mut schemas)) = (results.last(), connection.schemas.lock()) {
                    schemas.insert(sql.to_string(), Arc::clone(&last.schema));
                }
                if let Ok(mut described) = connection.described.lock() {
                    described.insert(sql.to_string(), results);
                }
            }
            return Ok(Some((sql.to_string(), None)));
        }
        let parsed = session
            .sql
            .query_parser()
            .parse_sql(client, sql, types)
            .await?;
        if role == ServerRole::ReadOnly
            && let Some((_, Some((statement, _)))) = &parsed
            && !sql_read_only(statement)
        {
            return Err(read_only_error(&user, sql));
        }
        Ok(parsed)
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        match statement {
            (_, None) => Ok(Vec::new()),
            _ => self.sql()?.query_parser().get_parameter_types(statement),
        }
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let (text, None) = statement else {
            return self
                .sql()?
                .query_parser()
                .get_result_schema(statement, column_format);
        };
        let connection = self.connection()?;
        let described = connection
            .schemas
            .lock()
            .ok()
            .and_then(|schemas| schemas.get(text).cloned());
        let schema: SchemaRef = match described {
            Some(schema) => schema,
            None => {
                let session = connection.session.get().ok_or_else(not_open)?;
                let project = session.project.try_lock().map_err(|_| busy())?;
                match segql_statement(&project, text)? {
                    ParsedStatement::Store(store) => match result_fields(&store) {
                        Some(fields) => Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
                        None => return Ok(Vec::new()),
                    },
                    _ => return Ok(Vec::new()),
                }
            }
        };
        arrow_schema_to_pg_fields(&schema, column_format.unwrap_or(&Format::UnifiedText), None)
    }
}

impl WireParser {
    fn connection(&self) -> PgWireResult<Arc<Connection>> {
        self.connection.upgrade().ok_or_else(not_open)
    }

    fn sql(&self) -> PgWireResult<Arc<DfSessionService>> {
        let connection = self.connection()?;
        let session = connection.session.get().ok_or_else(not_open)?;
        Ok(Arc::clone(&session.sql))
    }
}

/// `text` as one segment statement, or an error when it is something else.
fn segql_statement(project: &Project, text: &str) -> PgWireResult<ParsedStatement> {
    let mut statements = project.parse(text).map_err(|e| error_response(&e))?;
    match (statements.pop(), statements.is_empty()) {
        (Some(statement), true) if !matches!(statement.statement, ParsedStatement::Sql(_)) => {
            Ok(statement.statement)
        }
        _ => Err(user_error(
            "ERROR",
            "42601",
            "a prepared statement holds one statement; send segment statements one at a time"
                .into(),
        )),
    }
}

/// Whether a segment statement runs when parsed, to learn its columns:
/// the ones that only read.
fn describe_by_running(statement: &ParsedStatement) -> bool {
    matches!(
        statement,
        ParsedStatement::Segment { .. } | ParsedStatement::Store(StoreStatement::Show)
    )
}

/// Refuses a segment statement a read-only user may not run.
fn check_segql(user: &str, role: ServerRole, statement: &ParsedStatement) -> PgWireResult<()> {
    match statement {
        ParsedStatement::Store(store)
            if role == ServerRole::ReadOnly && !matches!(store, StoreStatement::Show) =>
        {
            Err(read_only_error(user, store_verb(store)))
        }
        _ => Ok(()),
    }
}

fn store_verb(statement: &StoreStatement) -> &'static str {
    match statement {
        StoreStatement::Create { .. } => "CREATE SEGMENT",
        StoreStatement::Alter { .. } | StoreStatement::Pin { .. } => "ALTER SEGMENT",
        StoreStatement::Drop { .. } => "DROP SEGMENT",
        StoreStatement::Show => "SHOW SEGMENTS",
        StoreStatement::Refresh { .. } => "REFRESH SEGMENTS",
    }
}

/// Whether a DataFusion statement only reads.
fn df_read_only(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(statement) => sql_read_only(statement),
        DfStatement::Explain(explain) => df_read_only(&explain.statement),
        DfStatement::Reset(_) => true,
        DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) => false,
    }
}

/// Whether a SQL statement only reads (queries, EXPLAIN, SHOW, SET,
/// transactions and cursors): what a read-only user may send.
fn sql_read_only(statement: &SqlStatement) -> bool {
    use SqlStatement as S;
    match statement {
        S::Query(query) => {
            !matches!(&*query.body, SetExpr::Select(select) if select.into.is_some())
        }
        S::Explain { statement, .. } | S::Prepare { statement, .. } => sql_read_only(statement),
        S::Set { .. }
        | S::ShowFunctions { .. }
        | S::ShowVariable { .. }
        | S::ShowStatus { .. }
        | S::ShowVariables { .. }
        | S::ShowCreate { .. }
        | S::ShowColumns { .. }
        | S::ShowCatalogs { .. }
        | S::ShowDatabases { .. }
        | S::ShowSchemas { .. }
        | S::ShowCharset { .. }
        | S::ShowObjects { .. }
        | S::ShowTables { .. }
        | S::ShowViews { .. }
        | S::ShowCollation { .. }
        | S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. }
        | S::Declare { .. }
        | S::Fetch { .. }
        | S::Close { .. }
        | S::Discard { .. }
        | S::Deallocate { .. }
        | S::ExplainTable { .. }
        | S::Execute { .. }
        | S::Reset { .. } => true,
        _ => false,
    }
}

/// A statement result as PostgreSQL rows.
fn encode(
    result: &StatementResult,
    format: &Format,
    options: &Arc<FormatOptions>,
) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &result.schema,
        format,
        Some(Arc::clone(options)),
    )?);
    if fields.is_empty() {
        return Ok(Response::Execution(Tag::new("OK")));
    }
    let rows: Vec<PgWireResult<DataRow>> = result
        .batches
        .iter()
        .flat_map(|batch| encode_recordbatch(Arc::clone(&fields), batch.clone()))
        .collect();
    Ok(Response::Query(QueryResponse::new(
        fields,
        stream::iter(rows),
    )))
}

fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_string(),
        code.to_string(),
        message,
    )))
}

fn canceled() -> PgWireError {
    user_error(
        "ERROR",
        "57014",
        "canceling statement due to user request".into(),
    )
}

fn not_open() -> PgWireError {
    user_error(
        "ERROR",
        "08003",
        "the connection's session is not open".into(),
    )
}

fn busy() -> PgWireError {
    user_error(
        "ERROR",
        "55006",
        "the connection is running another statement; wait for it".into(),
    )
}

fn read_only_error(user: &str, what: &str) -> PgWireError {
    let what: String = what.split_whitespace().collect::<Vec<_>>().join(" ");
    let what = match what.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &what[..cut]),
        None => what,
    };
    user_error(
        "ERROR",
        "42501",
        format!(
            "permission denied: user \"{user}\" is read-only; it may query and PREVIEW, EXPLAIN \
             or SHOW segments, not run `{what}`. Connect as a user with role = \"admin\" to \
             change segments or tables."
        ),
    )
}

/// An error with what to do when it is the connection's memory limit.
fn with_memory_hint(error: PgWireError, limit: Option<usize>) -> PgWireError {
    let text = match &error {
        PgWireError::ApiError(e) => e.to_string(),
        PgWireError::UserError(info) => info.message.clone(),
        _ => return error,
    };
    if !text.contains("Resources exhausted") {
        return error;
    }
    let limit = limit.map_or_else(
        || "no limit".to_string(),
        |bytes| format!("{} MiB", bytes >> 20),
    );
    let first = text.lines().next().unwrap_or_default();
    let first = first
        .split(" with top memory consumers")
        .next()
        .unwrap_or(first);
    // The operator's partition number changes from run to run.
    let first = match first.rsplit_once('[') {
        Some((operator, partition)) if partition.trim_end_matches(']').parse::<u32>().is_ok() => {
            operator
        }
        _ => first,
    };
    user_error(
        "ERROR",
        "53200",
        format!(
            "{first}\nThe statement needs more memory than this connection may use ({limit}, \
             [server] query_memory_limit in the project file); raise the limit, or narrow the \
             statement."
        ),
    )
}

/// One of segql's errors as the client sees it: its message, and a SQLSTATE
/// for its kind.
fn error_response(error: &Error) -> PgWireError {
    let message = error.to_string();
    let code = if message.contains("Resources exhausted") || message.contains("--memory-limit") {
        "53200"
    } else if matches!(error, Error::StatementSyntax(_)) || message.contains("SQL syntax error") {
        "42601"
    } else {
        "XX000"
    };
    user_error("ERROR", code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> SqlStatement {
        PostgresCompatibilityParser::new()
            .parse(sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn read_only_users_may_read_and_nothing_else() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
            "SET statement_timeout = 1000",
            "BEGIN",
            "COMMIT",
            "DECLARE c CURSOR FOR SELECT 1",
        ] {
            assert!(sql_read_only(&parse(sql)), "{sql}");
        }
        for sql in [
            "CREATE TABLE t AS SELECT 1",
            "CREATE VIEW v AS SELECT 1",
            "INSERT INTO t VALUES (1)",
            "DROP TABLE t",
            "SELECT 1 INTO t",
            "EXPLAIN CREATE TABLE t AS SELECT 1",
            "DELETE FROM t",
        ] {
            assert!(!sql_read_only(&parse(sql)), "{sql}");
        }
    }

    #[test]
    fn a_cancel_needs_the_right_secret() {
        let cancels = Cancels::default();
        let mut receiver = cancels.register(7, vec![1, 2, 3]);
        assert!(!cancels.cancel(7, &[9]));
        assert!(!cancels.cancel(8, &[1, 2, 3]));
        assert!(!receiver.has_changed().unwrap());
        assert!(cancels.cancel(7, &[1, 2, 3]));
        assert!(receiver.has_changed().unwrap());
        receiver.borrow_and_update();
        cancels.forget(7);
        assert!(!cancels.cancel(7, &[1, 2, 3]));
    }

    #[test]
    fn the_refusal_names_the_statement_shortly() {
        let PgWireError::UserError(info) = read_only_error(
            "analyst",
            "CREATE   TABLE\n t AS SELECT customer_id, amount, order_ts FROM orders WHERE amount > 100",
        ) else {
            panic!("not a user error");
        };
        assert_eq!(info.code, "42501");
        assert_eq!(
            info.message,
            "permission denied: user \"analyst\" is read-only; it may query and PREVIEW, \
             EXPLAIN or SHOW segments, not run `CREATE TABLE t AS SELECT customer_id, amount, \
             order_ts FROM ...`. Connect as a user with role = \"admin\" to change segments or \
             tables."
        );
    }
}
