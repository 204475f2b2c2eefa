//! `framemap serve`: wasi:http requests answered by prepared instances on
//! recycled memories, a request storm beyond the concurrency bound, a
//! graceful shutdown, and components that cannot be served.
//!
//! The guests are `tests/guests/http_hello.wasm`, `http_image.wasm` and
//! `http_proxy.wasm` (Rust `wasm32-wasip2`, rebuilt by
//! `tests/guests/build.sh`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const FRAMEMAP: &str = env!("CARGO_BIN_EXE_framemap");

fn guest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests").join(name).to_str().expect("utf-8").to_owned()
}

/// The compile cache of this test process's servers (not the user's).
fn test_cache() -> PathBuf {
    std::env::temp_dir().join(format!("framemap-serve-test-{}-cache", std::process::id()))
}

/// A running server and the address it listens on.
struct Server {
    child: Child,
    addr: String,
    stderr: BufReader<std::process::ChildStderr>,
    /// The `framemap: notice:` lines printed before it listened (the
    /// compile cache's).
    notices: Vec<String>,
}

impl Server {
    fn start(extra: &[&str], component: &str) -> Server {
        Server::start_in(extra, component, &test_cache())
    }

    /// Starts a server whose compile cache is `cache`.
    fn start_in(extra: &[&str], component: &str, cache: &Path) -> Server {
        let mut child = Command::new(FRAMEMAP)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .arg(component)
            .env("FRAMEMAP_CACHE_DIR", cache)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn framemap serve");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut notices = Vec::new();
        let addr = loop {
            let mut line = String::new();
            stderr.read_line(&mut line).expect("stderr line");
            if line.starts_with("framemap: notice: ") {
                notices.push(line.trim().to_owned());
                continue;
            }
            break line
                .trim()
                .strip_prefix("framemap: serve: listening on http://")
                .and_then(|rest| rest.strip_suffix('/'))
                .unwrap_or_else(|| panic!("unexpected line: {line:?}"))
                .to_owned();
        };
        Server { child, addr, stderr, notices }
    }

    /// One GET over a new connection: (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        get(&self.addr, path)
    }

    /// Sends SIGTERM and returns the exit status and the rest of stderr.
    fn terminate(mut self) -> (Option<i32>, String) {
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc_kill(self.child.id() as i32, 15) };
        assert_eq!(sent, 0, "kill");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "serve did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).expect("stderr");
        (status.code(), rest)
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, dechunk(&body))
}

/// The body of a chunked response (or the body itself if not chunked).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { return body.to_owned() };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    if out.is_empty() { body.to_owned() } else { out }
}

#[test]
fn every_request_gets_a_fresh_instance_from_the_image() {
    let hello = Server::start(&[], &guest("http_hello.wasm"));
    assert_eq!(hello.get("/"), (200, "hello from wasi:http\n".to_owned()));
    let (status, stderr) = hello.terminate();
    assert_eq!(status, Some(0), "{stderr}");
    // The comparison mode: the unchanged component on wasmtime's pooling allocator.
    let pooling = Server::start(&["--allocator", "wasmtime-pooling"], &guest("http_image.wasm"));
    let (status, body) = pooling.get("/5");
    assert_eq!(status, 200);
    let pooled_checksum = body.split(' ').nth(1).map(str::to_owned);
    let (status, stderr) = pooling.terminate();
    assert_eq!(status, Some(0), "{stderr}");

    let image = Server::start(&["--max-concurrency", "2"], &guest("http_image.wasm"));
    // Each request writes 16 pages; the checksum it reports is taken
    // before, so every instance (on recycled slots) must see the image.
    let first = image.get("/5");
    assert_eq!(first.0, 200);
    assert!(first.1.starts_with("image ") && first.1.ends_with(" page 5\n"), "{first:?}");
    for page in [5, 9, 5, 63] {
        let (status, body) = image.get(&format!("/{page}"));
        assert_eq!(status, 200);
        assert_eq!(body.split(' ').nth(1), first.1.split(' ').nth(1), "instance saw an earlier request's writes");
    }
    assert_eq!(first.1.split(' ').nth(1), pooled_checksum.as_deref(), "framemap and wasmtime's allocator agree");
    let (status, stderr) = image.terminate();
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
}

#[test]
fn a_storm_beyond_the_bound_is_answered_and_the_server_survives() {
    let server = Server::start(&["--max-concurrency", "1", "--max-queue", "2"], &guest("http_image.wasm"));
    let addr = server.addr.clone();
    let clients: Vec<_> = (0..48)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || get(&addr, &format!("/{i}")).0)
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().expect("client")).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert_eq!(server.get("/1").0, 200, "still serving after the storm");
    let (status, stderr) = server.terminate();
    assert_eq!(status, Some(0), "{stderr}");
}

#[test]
fn components_that_cannot_be_served_are_one_line_errors() {
    let wasip2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../framemap-wasmtime/tests/guests/wasip2_command.wasm");
    for (component, expected) in [
        (wasip2.to_str().expect("utf-8").to_owned(), "is not a wasi:http component"),
        ("/nonexistent.wasm".to_owned(), "failed to read"),
        ("--allocator=nope".to_owned(), "unknown allocator `nope`"),
    ] {
        let mut command = Command::new(FRAMEMAP);
        command.args(["serve", "--addr", "127.0.0.1:0", &component]).env("FRAMEMAP_CACHE_DIR", test_cache());
        let out = command.output().expect("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("framemap: error: ") && stderr.contains(expected), "{stderr}");
    }
}

/// The cache's entry files.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(cache.join("v1/entries")) else { return Vec::new() };
    let mut found: Vec<PathBuf> = listing.map(|e| e.expect("entry").path()).collect();
    found.sort();
    found
}

#[test]
fn a_restart_maps_the_component_from_the_compile_cache() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = std::env::temp_dir().join(format!("framemap-serve-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = dir.join("cache");
    let hello = guest("http_hello.wasm");
    let serve_once = |extra: &[&str], cache: &Path| {
        let server = Server::start_in(extra, &hello, cache);
        assert_eq!(server.get("/"), (200, "hello from wasi:http\n".to_owned()));
        let notices = server.notices.clone();
        let (status, stderr) = server.terminate();
        assert_eq!(status, Some(0), "{extra:?}: {stderr}");
        assert!(!stderr.contains("notice"), "{stderr}");
        notices
    };
    assert_eq!(serve_once(&[], &cache), Vec::<String>::new(), "a miss compiles and writes quietly");
    let found = entries(&cache);
    assert_eq!(found.len(), 1, "one entry: {found:?}");
    // Age the entry: the restart's hit touches it and keeps its file.
    let entry = std::fs::File::options().write(true).open(&found[0]).expect("open entry");
    entry.set_modified(SystemTime::now() - Duration::from_secs(7200)).expect("age");
    let before = std::fs::metadata(&found[0]).expect("stat");
    assert_eq!(serve_once(&[], &cache), Vec::<String>::new());
    let after = std::fs::metadata(&found[0]).expect("stat");
    assert_eq!(before.ino(), after.ino(), "the entry was used, not rewritten");
    assert!(after.modified().expect("mtime") > before.modified().expect("mtime"), "a restart hits the entry");

    // A damaged entry: one notice, rebuilt, served.
    let whole = std::fs::read(&found[0]).expect("read");
    std::fs::write(&found[0], &whole[..whole.len() / 2]).expect("truncate");
    let notices = serve_once(&[], &cache);
    assert!(notices.len() == 1 && notices[0].contains("rebuilding"), "{notices:?}");
    assert_eq!(std::fs::metadata(&found[0]).expect("stat").len(), whole.len() as u64, "rewritten whole");

    // Neither `--no-cache` nor the comparison allocators touch the cache.
    for extra in [&["--no-cache"][..], &["--allocator", "wasmtime-pooling"]] {
        let unused = dir.join("unused");
        assert_eq!(serve_once(extra, &unused), Vec::<String>::new());
        assert!(!unused.exists(), "{extra:?} created the cache");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A one-thread HTTP/1.1 server on loopback that answers every request
/// with `200` and `from upstream: PATH`, then closes: the backend a guest's
/// outgoing request reaches. Returns its port.
fn upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // The headers, up to the empty line (a GET has no body).
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let path = request_line.split(' ').nth(1).unwrap_or("?").to_owned();
            let body = format!("from upstream: {path}\n");
            let _ =
                write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    port
}

#[test]
fn a_guest_reaches_a_backend_with_an_outgoing_request() {
    let port = upstream();
    let server = Server::start(&[], &guest("http_proxy.wasm"));
    for path in ["a", "b/c?d=1"] {
        let (status, body) = server.get(&format!("/{port}/{path}"));
        assert_eq!((status, body.as_str()), (200, format!("upstream 200: from upstream: /{path}\n").as_str()));
    }
    // A backend that is not there: the guest gets the error and answers;
    // the server goes on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let (status, body) = server.get(&format!("/{closed}/x"));
    assert_eq!(status, 200);
    assert!(body.starts_with("upstream error: "), "{body}");
    assert_eq!(server.get(&format!("/{port}/again")).1, "upstream 200: from upstream: /again\n");
    let (code, rest) = server.terminate();
    assert_eq!(code, Some(0), "{rest}");
}
