//! A wasi:http handler for `framemap serve`'s tests and benchmark.
//!
//! Every response is `200` with a text body. Without the `image` feature it
//! answers `hello from wasi:http`. With it, the component carries a 16 MiB
//! data image; each request writes 16 of its pages (one in every 64, from a
//! page chosen by the request's path, e.g. `/7`) and answers with a checksum
//! of the whole image and the request's page, so a response shows whether
//! the instance started from the image (as every new instance must).
//! With the `proxy` feature it makes an outgoing request: a path
//! `/PORT/REST` fetches `http://127.0.0.1:PORT/REST` and answers with the
//! upstream's status and body, or with the error the request got.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

#[cfg(feature = "image")]
static mut IMAGE: [u8; 16 << 20] = *include_bytes!(concat!(env!("OUT_DIR"), "/image.bin"));

struct Handler;

impl wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let body = respond(&request.path_with_query().unwrap_or_default());
        let response = OutgoingResponse::new(Fields::new());
        let outgoing = response.body().expect("body");
        ResponseOutparam::set(response_out, Ok(response));
        let stream = outgoing.write().expect("stream");
        for chunk in body.as_bytes().chunks(4096) {
            stream.blocking_write_and_flush(chunk).expect("write");
        }
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("finish");
    }
}

#[cfg(not(any(feature = "image", feature = "proxy")))]
fn respond(_path: &str) -> String {
    "hello from wasi:http\n".to_string()
}

#[cfg(feature = "image")]
fn respond(path: &str) -> String {
    let first: usize = path.trim_start_matches('/').parse().unwrap_or(0) % 64;
    // SAFETY: one request at a time per instance; nothing else touches IMAGE.
    let image = unsafe { &mut *std::ptr::addr_of_mut!(IMAGE) };
    let before = checksum(image);
    for k in 0..16 {
        let page = first + 64 * k;
        image[page * 4096] = image[page * 4096].wrapping_add(1);
    }
    format!("image {before:016x} page {first}\n")
}

#[cfg(feature = "image")]
fn checksum(bytes: &[u8]) -> u64 {
    // Sampled: one word per page keeps each request cheap.
    bytes.chunks(4096).fold(0xcbf2_9ce4_8422_2325, |h, page| (h ^ u64::from(page[8])).wrapping_mul(0x100_0000_01b3))
}

#[cfg(feature = "proxy")]
fn respond(path: &str) -> String {
    use wasi::http::types::{ErrorCode, OutgoingRequest, Scheme};
    let path = path.trim_start_matches('/');
    let (port, rest) = path.split_once('/').unwrap_or((path, ""));
    let fetch = || -> Result<(u16, Vec<u8>), ErrorCode> {
        let request = OutgoingRequest::new(Fields::new());
        request.set_scheme(Some(&Scheme::Http)).expect("scheme");
        request.set_authority(Some(&format!("127.0.0.1:{port}"))).expect("authority");
        request.set_path_with_query(Some(&format!("/{rest}"))).expect("path");
        let response = wasi::http::outgoing_handler::handle(request, None)?;
        response.subscribe().block();
        let response = response.get().expect("ready").expect("first get")?;
        let status = response.status();
        let body = response.consume().expect("body");
        let stream = body.stream().expect("stream");
        let mut bytes = Vec::new();
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            bytes.extend(chunk);
        }
        Ok((status, bytes))
    };
    match fetch() {
        Ok((status, bytes)) => format!("upstream {status}: {}", String::from_utf8_lossy(&bytes)),
        Err(error) => format!("upstream error: {error:?}\n"),
    }
}

wasi::http::proxy::export!(Handler);
