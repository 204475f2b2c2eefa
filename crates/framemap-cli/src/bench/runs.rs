//! The two kinds of run: the built-in workload (every workload, each group
//! on freshly built engines) and a user's module (`--module`).

use std::path::Path;

use anyhow::{Context as _, Result};
use framemap_benches::{
    Allocator, CONTIGUOUS_DIRTY_PAGES, DIRTY_PAGES, EngineOptions, Guest, PoolingLimits, Target, Workload, builtin,
};

use super::measure::{
    Tally, builtin_targets, measure_compute, measure_footprint, measure_instantiate, tally_of, target,
};
use super::{Plan, Results, RunContext, progress};

/// The built-in workload on every allocator.
///
/// Every (workload, k) group runs on freshly built engines: an allocator's
/// pool keeps state from what it served (e.g. pages kept resident after a
/// reset), so a group measures the steady state of instances dirtying k
/// pages, not the history of earlier groups. The correctness checks run on
/// engines of their own for the same reason.
pub(super) fn bench_builtin(plan: &Plan) -> Result<(Results, RunContext)> {
    progress("building the built-in module and checking it on every allocator");
    let wasm = builtin::wasm();
    let image = builtin::image();
    let expected = builtin::expected_compute(&image);
    let recycled = EngineOptions::default();
    let fresh = EngineOptions { framemap_recycling: false, ..EngineOptions::default() };
    let mut context = RunContext {
        builtin: true,
        title: format!(
            "built-in module: {} MiB memory, {} MiB dense data image",
            (builtin::MIN_PAGES as u64) << 16 >> 20,
            builtin::IMAGE_BYTES >> 20
        ),
        notes: Vec::new(),
        creator_stats: Vec::new(),
    };
    let framemap = plan.allocators.contains(&Allocator::Framemap);
    let mut checked = builtin_targets(&plan.allocators, &recycled, &wasm)?;
    if framemap {
        checked.extend(builtin_targets(&[Allocator::Framemap], &fresh, &wasm)?);
    }
    for t in &checked {
        for note in t.notes() {
            progress(&format!("{}: {note}", t.allocator()));
            context.notes.push(format!("{}: {note}", t.allocator()));
        }
        t.verify_builtin(&image).context("the built-in module does not run correctly")?;
    }
    drop(checked);

    let mut results = Results::default();
    for (workload, ks) in
        [(Workload::Instantiate, &DIRTY_PAGES[..]), (Workload::InstantiateContiguous, &CONTIGUOUS_DIRTY_PAGES[..])]
    {
        let mut tally = Tally::default();
        for &k in ks {
            let targets = builtin_targets(&plan.allocators, &recycled, &wasm)?;
            let all: Vec<&Target> = targets.iter().collect();
            measure_instantiate(&mut results, workload, &all, &[k], plan)?;
            targets.iter().for_each(|t| tally.add(t));
        }
        context.creator_stats.extend(tally.line("recycling").map(|l| (workload, l)));
    }

    let ondemand: Vec<Allocator> =
        plan.allocators.iter().copied().filter(|&a| a == Allocator::WasmtimeOnDemand).collect();
    let mut tally = Tally::default();
    for k in DIRTY_PAGES {
        let mut pair = builtin_targets(&ondemand, &recycled, &wasm)?;
        if framemap {
            pair.extend(builtin_targets(&[Allocator::Framemap], &fresh, &wasm)?);
        }
        if !pair.is_empty() {
            measure_instantiate(
                &mut results,
                Workload::InstantiateFresh,
                &pair.iter().collect::<Vec<_>>(),
                &[k],
                plan,
            )?;
        }
        pair.iter().for_each(|t| tally.add(t));
    }
    context.creator_stats.extend(tally.line("recycling off").map(|l| (Workload::InstantiateFresh, l)));

    measure_footprint(&mut results, &wasm, plan)?;
    measure_compute(&mut results, plan, plan.compute_rounds, Some(expected), |_| {
        builtin_targets(&plan.allocators, &recycled, &wasm)
    })?;
    Ok((results, context))
}

/// A user's module on every allocator that can run it.
pub(super) fn bench_module(path: &Path, export: Option<&str>, plan: &Plan) -> Result<(Results, RunContext)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read module `{}`", path.display()))?;
    let wasm = framemap_benches::to_binary(&bytes).with_context(|| format!("invalid module `{}`", path.display()))?;
    let limits = PoolingLimits::for_module(&wasm).with_context(|| format!("invalid module `{}`", path.display()))?;
    let guest = Guest::User { export: export.map(str::to_owned) };
    let recycled = EngineOptions { pooling: limits, ..EngineOptions::default() };
    let fresh = EngineOptions { framemap_recycling: false, ..recycled };
    let mut context = RunContext {
        builtin: false,
        title: match export {
            Some(name) => format!("module {} (calling `{name}`)", path.display()),
            None => format!("module {}", path.display()),
        },
        notes: Vec::new(),
        creator_stats: Vec::new(),
    };
    progress(&format!("compiling {} once per allocator", path.display()));

    // The reference allocator first: its errors (invalid module, missing
    // export, a trap) are the module's and end the run.
    let plain = Target::new(Allocator::WasmtimeOnDemand.setup(&recycled)?, &wasm, &Guest::User { export: None })
        .with_context(|| format!("invalid module `{}`", path.display()))?;
    if let Some(name) = export {
        framemap_benches::workload::check_export(plain.module(), name)
            .with_context(|| format!("module `{}`", path.display()))?;
    }
    drop(plain);
    let reference = Target::new(Allocator::WasmtimeOnDemand.setup(&recycled)?, &wasm, &guest)?;
    let running = match export {
        Some(name) => format!("instantiating the module and calling `{name}` failed"),
        None => "instantiating the module failed".to_owned(),
    };
    drop(reference.spawn(0).context(running)?);
    let mut targets = vec![reference];
    for &allocator in &Allocator::ALL[1..] {
        match target(allocator, &recycled, &wasm, &guest).and_then(|t| t.spawn(0).map(drop).map(|()| t)) {
            Ok(t) => targets.push(t),
            Err(err) => {
                let note = format!("{allocator}: skipped: {err:#}");
                progress(&note);
                context.notes.push(note);
            }
        }
    }
    let framemap_fresh =
        target(Allocator::Framemap, &fresh, &wasm, &guest).and_then(|t| t.spawn(0).map(drop).map(|()| t));
    for t in &targets {
        for note in t.notes() {
            progress(&format!("{}: {note}", t.allocator()));
            context.notes.push(format!("{}: {note}", t.allocator()));
        }
    }

    let selected = |t: &&Target| plan.allocators.contains(&t.allocator());
    let mut results = Results::default();
    let all: Vec<&Target> = targets.iter().filter(selected).collect();
    measure_instantiate(&mut results, Workload::Instantiate, &all, &[0], plan)?;
    if let Some(t) = all.iter().find(|t| t.allocator() == Allocator::Framemap) {
        context.creator_stats.extend(tally_of(t).line("recycling").map(|l| (Workload::Instantiate, l)));
    }
    match framemap_fresh {
        Ok(fresh) => {
            let pair: Vec<&Target> = [&targets[0], &fresh].into_iter().filter(selected).collect();
            if !pair.is_empty() {
                measure_instantiate(&mut results, Workload::InstantiateFresh, &pair, &[0], plan)?;
            }
            context
                .creator_stats
                .extend(tally_of(&fresh).line("recycling off").map(|l| (Workload::InstantiateFresh, l)));
        }
        Err(err) => context.notes.push(format!("framemap (recycling off): skipped: {err:#}")),
    }
    if export.is_some() {
        // The user's targets are built once (their setup may be costly).
        measure_compute(&mut results, plan, 1, None, |_| Ok(all.clone()))?;
    }
    Ok((results, context))
}
