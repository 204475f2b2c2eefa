//! A wasi:http handler for `framemap serve`'s tests and benchmark.
//!
//! Every response is `200` with a text body. Without the `image` feature it
//! answers `hello from wasi:http`. With it, the component carries a 16 MiB
//! data image; each request writes 16 of its pages (one in every 64, from a
//! page chosen by the request's path, e.g. `/7`) and answers with a checksum
//! of the whole image and the request's page, so a response shows whether
//! the instance started from the image (as every new instance must).

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

#[cfg(not(feature = "image"))]
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

wasi::http::proxy::export!(Handler);
