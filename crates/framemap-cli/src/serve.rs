//! `framemap serve`: a wasi:http server whose every request runs in a new
//! instance of a [`PreparedComponent`], on recycled framemap memories.
//!
//! This is `wasmtime serve`'s job with framemap's memory layer: the
//! component (exporting `wasi:http/incoming-handler@0.2.x`) is prepared once
//! (its data segments become copy-on-write images), its imports resolved
//! once (WASI preview 2 and `wasi:http`), and each request instantiates it in
//! a fresh store, hands it the request and streams its response back over
//! HTTP/1.1 (hyper, on a multi-threaded tokio runtime).
//!
//! - **Bounded concurrency.** At most `--max-concurrency` requests run guest
//!   code at once; up to `--max-queue` more wait for a slot; beyond that a
//!   request is answered `503 Service Unavailable` at once, never queued
//!   without bound.
//! - **Graceful shutdown.** SIGINT or SIGTERM stops accepting connections;
//!   requests in flight finish (for at most `--shutdown-timeout` seconds);
//!   the exit status is 0.
//! - **Errors.** A component that is not a wasi:http proxy (no
//!   `wasi:http/incoming-handler` export), or whose imports cannot be
//!   satisfied, is refused before the server listens. A guest that traps
//!   or never sets its response gets `500 Internal Server Error` and one
//!   `framemap: serve:` line on stderr; the server goes on.
//! - **Compile cache.** With the framemap allocator the prepared component
//!   comes from `framemap run`'s compile cache ([`crate::cache`]: the same
//!   folder, keys, bound and notices; `--no-cache` compiles it every
//!   time), so a restart maps the compiled component and its images
//!   instead of compiling. The comparison allocators below compile the
//!   unchanged component every time, uncached: they exist to measure
//!   serving, not start-up, and wasmtime's own cache would be the fair
//!   comparison there.
//! - **Comparison.** `--allocator wasmtime-pooling` (or any of `framemap
//!   bench`'s allocators) serves the unchanged component on wasmtime's own
//!   allocator, the same way, for benchmarks.
//! - **Outgoing requests.** A guest's `wasi:http/outgoing-handler` requests
//!   are sent by wasmtime-wasi-http's own client (HTTP/1.1, TLS with the
//!   webpki roots for `https`), as `wasmtime serve` sends them.
//! - **Not yet:** HTTP/2, and snapshots.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use framemap_benches::{Allocator, EngineOptions};
use framemap_wasmtime::{PreparedComponent, PreparedComponentInstancePre};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Arguments of `framemap serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub addr: SocketAddr,

    /// Requests running guest code at once.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrency: u32,

    /// Requests waiting for a slot; one more is answered 503.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_queue: usize,

    /// Seconds to let requests in flight finish after SIGINT or SIGTERM.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub shutdown_timeout: u64,

    /// Set an environment variable in every instance: `KEY=VALUE`. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = crate::run::parse_env)]
    pub envs: Vec<(String, String)>,

    /// Whose memories serve the instances: `framemap` (prepared component,
    /// recycled framemap slots), or, to compare, one of wasmtime's own
    /// allocators on the unchanged component (`wasmtime-pooling` is
    /// `wasmtime serve`'s default).
    #[arg(long, default_value = "framemap", value_name = "ALLOCATOR", value_parser = parse_allocator)]
    pub allocator: Allocator,

    /// Compile the component without the compile cache (neither read nor
    /// written; see `framemap run --help`). Only the framemap allocator
    /// uses the cache.
    #[arg(long)]
    pub no_cache: bool,

    /// The wasi:http component (`.wasm`), exporting
    /// `wasi:http/incoming-handler`.
    #[arg(value_name = "COMPONENT")]
    pub component: PathBuf,
}

/// Runs `framemap serve` until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(serve_async(args))
}

/// Parses an `--allocator` name.
fn parse_allocator(name: &str) -> Result<Allocator, String> {
    Allocator::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Allocator::ALL.iter().map(|a| a.name()).collect();
        format!("unknown allocator `{name}` (one of: {})", names.join(", "))
    })
}

/// How a request's instance is made.
enum Pre {
    /// A prepared component on framemap memories.
    Framemap(PreparedComponentInstancePre<Host>),
    /// The unchanged component on one of wasmtime's allocators.
    Wasmtime(InstancePre<Host>),
}

/// A prepared server, before it listens.
pub struct Server {
    engine: Engine,
    pre: Pre,
    indices: ProxyIndices,
    running: Semaphore,
    waiting: AtomicUsize,
    max_queue: usize,
    envs: Vec<(String, String)>,
}

impl Server {
    /// Loads and prepares the component at `args.component` for serving.
    pub fn new(args: &ServeArgs) -> Result<Arc<Server>> {
        let setup = args.allocator.setup(&EngineOptions::default()).context("failed to create the engine")?;
        let engine = setup.engine;
        let path = &args.component;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        let unsatisfied = || format!("cannot serve `{}`: its imports cannot be satisfied", path.display());
        let (component, pre) = match setup.creator {
            Some(creator) => {
                let prepared: PreparedComponent = crate::cache::load(&creator, &engine, path, !args.no_cache)?;
                let pre = prepared.instance_pre(&linker).map_err(anyhow::Error::from).with_context(unsatisfied)?;
                (prepared.component().clone(), Pre::Framemap(pre))
            }
            None => {
                let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
                let component = Component::new(&engine, &bytes)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("failed to load `{}`", path.display()))?;
                let pre = linker.instantiate_pre(&component).map_err(anyhow::Error::from).with_context(unsatisfied)?;
                (component, Pre::Wasmtime(pre))
            }
        };
        let indices = ProxyIndices::new(&linker.instantiate_pre(&component)?).map_err(|e| {
            anyhow!(
                "`{}` is not a wasi:http component (it must export `wasi:http/incoming-handler`): {e:#}",
                path.display()
            )
        })?;
        Ok(Arc::new(Server {
            engine,
            pre,
            indices,
            running: Semaphore::new(args.max_concurrency as usize),
            waiting: AtomicUsize::new(0),
            max_queue: args.max_queue,
            envs: args.envs.clone(),
        }))
    }

    /// Answers one request: admission, then a new instance runs it.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<HyperOutgoingBody>, Infallible> {
        let permit = match self.running.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "framemap serve: too many requests\n"));
                }
                let permit = self.running.acquire().await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "framemap serve: shutting down\n")),
                }
            }
        };
        // The permit is held until the guest has finished, body included.
        permit.forget();
        let this = self.clone();
        let release = scopeguard(move || this.running.add_permits(1));
        match self.run(request, release).await {
            Ok(response) => Ok(response),
            Err(error) => {
                eprintln!("framemap: serve: request failed: {}", one_line(&error));
                Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "framemap serve: the guest failed\n"))
            }
        }
    }

    /// Instantiates the component and runs its handler on `request`.
    async fn run(&self, request: Request<Incoming>, release: ScopeGuard) -> Result<Response<HyperOutgoingBody>> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr().envs(&self.envs);
        let host = Host { wasi: wasi.build(), http: WasiHttpCtx::new(), table: ResourceTable::new() };
        let mut store = Store::new(&self.engine, host);
        let instance = match &self.pre {
            Pre::Framemap(pre) => pre.instantiate_async(&mut store).await,
            Pre::Wasmtime(pre) => pre.instantiate_async(&mut store).await,
        };
        let instance = instance.map_err(anyhow::Error::from).context("failed to instantiate")?;
        let proxy = self.indices.load(&mut store, &instance)?;
        let request = store.data_mut().http().new_incoming_request(Scheme::Http, request)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let task = tokio::task::spawn(async move {
            let _release = release;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, request, out).await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(anyhow!("the guest answered with an error: {code:?}")),
            // The guest returned (or trapped) without setting a response.
            Err(_) => match task.await {
                Ok(Ok(())) => Err(anyhow!("the guest returned without setting a response")),
                Ok(Err(error)) => Err(anyhow::Error::from(error)),
                Err(join) => Err(anyhow!("the guest's task failed: {join}")),
            },
        }
    }

    /// Serves connections from `listener` until `shutdown` resolves, then
    /// lets requests in flight finish for at most `timeout`.
    pub async fn serve_until(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
        timeout: Duration,
    ) -> Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of descriptors, say: back off, keep serving.
                            eprintln!("framemap: serve: accept failed: {error}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let server = self.clone();
                    let service = hyper::service::service_fn(move |request| server.clone().handle(request));
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        // A client that goes away mid-request is its business.
                        let _ = connection.await;
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        eprintln!("framemap: serve: shutting down (waiting for requests in flight)");
        if tokio::time::timeout(timeout, graceful.shutdown()).await.is_err() {
            eprintln!("framemap: serve: requests still in flight after {}s, stopping anyway", timeout.as_secs());
        }
        Ok(())
    }
}

async fn serve_async(args: ServeArgs) -> Result<u8> {
    let server = Server::new(&args)?;
    let listener = TcpListener::bind(args.addr).await.with_context(|| format!("cannot listen on {}", args.addr))?;
    let local = listener.local_addr()?;
    // The handlers are installed before the server says it listens, so a
    // signal sent as soon as it does is a graceful shutdown, not a kill.
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    eprintln!("framemap: serve: listening on http://{local}/");
    let shutdown = async {
        match signals {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            // No signal handling: serve until killed.
            _ => std::future::pending::<()>().await,
        }
    };
    server.serve_until(listener, shutdown, Duration::from_secs(args.shutdown_timeout)).await?;
    Ok(0)
}

/// A small text response of framemap's own.
fn plain(status: StatusCode, text: &'static str) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(text.as_bytes())).map_err(|never| match never {}).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// An error on one line (its causes joined).
fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}").lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// Runs a closure when dropped: gives the concurrency slot back however
/// the guest's task ends.
struct ScopeGuard(Option<Box<dyn FnOnce() + Send>>);

fn scopeguard(f: impl FnOnce() + Send + 'static) -> ScopeGuard {
    ScopeGuard(Some(Box::new(f)))
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// A request's store data: WASI, wasi:http and their resource table.
pub struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // The default hooks send outgoing requests (HTTP/1.1, with TLS for
        // `https`) as `wasmtime serve` does.
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: wasmtime_wasi_http::default_hooks() }
    }
}
