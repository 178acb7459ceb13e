//! `tracer check`: every prerequisite, hook and struct field, one line each.
use std::process::ExitCode;

use crate::{
    cli::EnvArgs,
    kernel_btf::KernelBtf,
    offsets::{HOOKS, Probe, resolve},
    privileges,
    tracefs::Tracefs,
};

/// Everything `run` needs, as probes (privileges, tracefs, BTF, tracepoints, fields).
pub fn probes(args: &EnvArgs) -> Vec<Probe> {
    let mut out = Vec::new();
    let missing = privileges::missing_capabilities();
    out.push(if missing.is_empty() {
        Probe::ok("privileges", "CAP_BPF and CAP_PERFMON (or root)")
    } else {
        Probe::missing("privileges", privileges::explain(&missing), true)
    });
    let btf_path = args.btf.display().to_string();
    let btf = KernelBtf::open(&btf_path);
    out.push(match &btf {
        Ok(_) => Probe::ok("btf", btf_path.clone()),
        Err(e) => Probe::missing(
            "btf",
            format!("{e}: struct-field evidence (sk_err, netns, probes) degrades; needs a kernel built with CONFIG_DEBUG_INFO_BTF"),
            false,
        ),
    });
    match Tracefs::locate(args.tracefs.as_deref()) {
        Ok(t) => {
            out.push(Probe::ok("tracefs", t.root().display().to_string()));
            out.extend(resolve(&t, btf.as_ref().map_err(|e| e.as_str())).probes);
        }
        Err(e) => {
            out.push(Probe::missing("tracefs", e.to_string(), true));
            for (_, group, name) in HOOKS {
                out.push(Probe::missing(
                    format!("tracepoint {group}:{name}"),
                    "tracefs is not mounted",
                    true,
                ));
            }
        }
    }
    out
}

pub fn main(args: &EnvArgs) -> ExitCode {
    let probes = probes(args);
    for p in &probes {
        println!(
            "{:<8} {}: {}",
            if p.ok { "ok" } else { "missing" },
            p.name,
            p.detail
        );
    }
    let bad = probes.iter().filter(|p| !p.ok).count();
    if bad == 0 {
        println!("all {} checks ok", probes.len());
        ExitCode::SUCCESS
    } else {
        println!("{bad} of {} checks failed", probes.len());
        ExitCode::FAILURE
    }
}
