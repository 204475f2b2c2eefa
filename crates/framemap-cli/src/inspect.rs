//! `framemap inspect`: what a snapshot file holds, and whether it is intact.
//!
//! Opens the file (header and manifest checked), verifies its data against
//! the manifest's digest, and prints its id, format, parent, checksum
//! verdict, and per memory its size, runs and pages per source (data, zero,
//! image, shared, unmapped, parent) and working set; then its globals. With
//! `--json`, one JSON object on stdout. The exit status is 0 for an intact
//! file, 1 if its data does not match its digest (the report is printed
//! anyway) or it cannot be opened.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use framemap::snapshot::{Digest, GlobalValue, MemoryRecord, PageSource, Snapshot};
use framemap_benches::report::json_string;

/// Arguments of `framemap inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// The snapshot file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Pages of one memory per page source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PerSource {
    data: u64,
    zero: u64,
    image: u64,
    shared: u64,
    unmapped: u64,
    parent: u64,
}

impl PerSource {
    fn of(memory: &MemoryRecord) -> PerSource {
        let mut counts = PerSource::default();
        for run in &memory.runs {
            let n = run.pages.len();
            match run.source {
                PageSource::Data { .. } => counts.data += n,
                PageSource::Zero => counts.zero += n,
                PageSource::Image { .. } => counts.image += n,
                PageSource::Shared { .. } => counts.shared += n,
                PageSource::Unmapped => counts.unmapped += n,
                PageSource::Parent => counts.parent += n,
            }
        }
        counts
    }

    fn fields(&self) -> [(&'static str, u64); 6] {
        [
            ("data", self.data),
            ("zero", self.zero),
            ("image", self.image),
            ("shared", self.shared),
            ("unmapped", self.unmapped),
            ("parent", self.parent),
        ]
    }
}

/// The distinct images a memory's clean pages name.
fn images(memory: &MemoryRecord) -> Vec<Digest> {
    let mut found: Vec<Digest> = Vec::new();
    for run in &memory.runs {
        if let PageSource::Image { image, .. } = run.source
            && !found.contains(&image)
        {
            found.push(image);
        }
    }
    found
}

/// A global's type and value, as text.
fn global_text(value: GlobalValue) -> (&'static str, String) {
    match value {
        GlobalValue::I32(v) => ("i32", v.to_string()),
        GlobalValue::I64(v) => ("i64", v.to_string()),
        GlobalValue::F32(bits) => ("f32", f32::from_bits(bits).to_string()),
        GlobalValue::F64(bits) => ("f64", f64::from_bits(bits).to_string()),
        GlobalValue::V128(v) => ("v128", format!("{v:#034x}")),
    }
}

/// Runs `framemap inspect`, returning the exit status.
pub fn inspect(args: InspectArgs) -> Result<u8> {
    let snapshot = Snapshot::open(&args.file).with_context(|| format!("cannot open `{}`", args.file.display()))?;
    let verdict = match snapshot.verify() {
        Ok(()) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    let text = if args.json { json(&snapshot, &verdict) } else { text(&snapshot, &args, &verdict) };
    print!("{text}");
    Ok(if verdict.is_ok() { 0 } else { crate::EXIT_ERROR })
}

fn text(snapshot: &Snapshot, args: &InspectArgs, verdict: &Result<(), String>) -> String {
    let page = framemap::host_page_size() as u64;
    let manifest = snapshot.manifest();
    let mut out = String::new();
    let _ = writeln!(out, "snapshot {}", args.file.display());
    let _ = writeln!(out, "  id        {}", snapshot.id());
    let _ = writeln!(
        out,
        "  format    version {}, pages of {page} bytes, {} data pages, file {}",
        framemap::snapshot::FORMAT_VERSION,
        snapshot.data_pages(),
        framemap::human_bytes(snapshot.file_len())
    );
    let parent = snapshot.parent_id().map_or_else(|| "none (a full snapshot)".to_string(), |p| p.to_string());
    let _ = writeln!(out, "  parent    {parent}");
    let checksum = match verdict {
        Ok(()) => "ok (data matches the manifest's digest)".to_string(),
        Err(e) => format!("FAILED: {e}"),
    };
    let _ = writeln!(out, "  checksum  {checksum}");
    for (index, memory) in manifest.memories.iter().enumerate() {
        let pages = memory.len.div_ceil(page);
        let _ = writeln!(
            out,
            "  memory {:?}: {} ({pages} pages), {} runs",
            memory.name,
            framemap::human_bytes(memory.len),
            memory.runs.len()
        );
        let counts: Vec<String> = PerSource::of(memory).fields().iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "    pages by source: {}", counts.join(", "));
        for image in images(memory) {
            let _ = writeln!(out, "    needs image {image}");
        }
        let working: Vec<_> = manifest.working_set.iter().filter(|w| w.memory as usize == index).collect();
        let ws_pages: u64 = working.iter().map(|w| w.pages.len()).sum();
        let _ = writeln!(out, "    working set: {ws_pages} pages in {} ranges", working.len());
    }
    let _ = writeln!(out, "  globals: {}", manifest.globals.len());
    for global in &manifest.globals {
        let (ty, value) = global_text(global.value);
        let _ = writeln!(out, "    {:?}: {ty} {value}", global.name);
    }
    out
}

fn json(snapshot: &Snapshot, verdict: &Result<(), String>) -> String {
    let page = framemap::host_page_size() as u64;
    let manifest = snapshot.manifest();
    let mut out = String::from("{");
    let _ = write!(out, "\"id\":{}", json_string(&snapshot.id().to_string()));
    let _ = write!(out, ",\"format_version\":{}", framemap::snapshot::FORMAT_VERSION);
    let _ = write!(
        out,
        ",\"page_size\":{page},\"data_pages\":{},\"file_len\":{}",
        snapshot.data_pages(),
        snapshot.file_len()
    );
    match snapshot.parent_id() {
        Some(p) => {
            let _ = write!(out, ",\"parent\":{}", json_string(&p.to_string()));
        }
        None => out.push_str(",\"parent\":null"),
    }
    match verdict {
        Ok(()) => out.push_str(",\"checksum\":\"ok\""),
        Err(e) => {
            let _ = write!(out, ",\"checksum\":{}", json_string(&format!("failed: {e}")));
        }
    }
    out.push_str(",\"memories\":[");
    for (index, memory) in manifest.memories.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"name\":{},\"len\":{},\"runs\":{}",
            json_string(&memory.name),
            memory.len,
            memory.runs.len()
        );
        out.push_str(",\"pages\":{");
        let fields: Vec<String> = PerSource::of(memory).fields().iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        out.push_str(&fields.join(","));
        out.push('}');
        let hashes: Vec<String> = images(memory).iter().map(|h| json_string(&h.to_string())).collect();
        let _ = write!(out, ",\"images\":[{}]", hashes.join(","));
        let ws_pages: u64 =
            manifest.working_set.iter().filter(|w| w.memory as usize == index).map(|w| w.pages.len()).sum();
        let _ = write!(out, ",\"working_set_pages\":{ws_pages}}}");
    }
    out.push_str("],\"globals\":[");
    for (index, global) in manifest.globals.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let (ty, value) = global_text(global.value);
        let _ = write!(
            out,
            "{{\"name\":{},\"type\":\"{ty}\",\"value\":{}}}",
            json_string(&global.name),
            json_string(&value)
        );
    }
    out.push_str("]}\n");
    out
}
