//! The raw relay baseline as a program: recvmmsg → fan-out to the sender's group → sendmmsg.
//!
//! Usage: raw_relay [--bind ADDR] [--duration SECS] [--stats-ms MS]
//!
//! Prints `{"listening":"ADDR"}` once bound, a JSON stats line every `--stats-ms` (if given), and a
//! final one on exit (after `--duration`, SIGTERM or SIGINT). The group of each sender is read once
//! from its first datagram (see `sluice_loadgen::relay`).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_loadgen::relay::RawRelay;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

struct Args {
    bind: SocketAddr,
    duration: Option<Duration>,
    stats_every: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        duration: None,
        stats_every: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => {
                let v = value()?;
                args.bind = v.parse().map_err(|_| format!("bad address {v:?}"))?;
            }
            "--duration" => {
                let v = value()?;
                let s: f64 = v.parse().map_err(|_| format!("bad duration {v:?}"))?;
                args.duration = (s > 0.0).then(|| Duration::from_secs_f64(s));
            }
            "--stats-ms" => {
                let v = value()?;
                let ms: u64 = v.parse().map_err(|_| format!("bad interval {v:?}"))?;
                args.stats_every = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "-h" | "--help" => {
                return Err(
                    "usage: raw_relay [--bind ADDR] [--duration SECS] [--stats-ms MS]".into(),
                )
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut relay = match RawRelay::bind(args.bind) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bind {}: {e}", args.bind);
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{{\"listening\":\"{}\"}}", relay.local_addr());
    let _ = out.flush();
    let start = Instant::now();
    let mut next_stats = args.stats_every.map(|d| start + d);
    while !STOP.load(Ordering::Relaxed) {
        if relay.poll() == 0 {
            relay.wait(10);
        }
        let now = Instant::now();
        if args.duration.is_some_and(|d| now >= start + d) {
            break;
        }
        if let (Some(at), Some(every)) = (next_stats, args.stats_every) {
            if now >= at {
                let _ = writeln!(out, "{}", relay.stats().to_json());
                let _ = out.flush();
                next_stats = Some(at + every);
            }
        }
    }
    let _ = writeln!(out, "{}", relay.stats().to_json());
    let _ = out.flush();
    ExitCode::SUCCESS
}
