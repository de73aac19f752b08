//! Replays a congestion-control trace (`[videobridge.cc] trace-dir`) through an `Estimator` and prints
//! the probe clusters' opening and closing times first, then, per feedback, the time, the estimate and
//! its parts and any probe cluster's result. A debugging aid: `cargo run --release --example cc_replay --
//! FILE [INITIAL_BPS]` (the initial estimate in the estimator's datagram terms; default Jitsi's 2.5 Mbit/s).

use sluice_core::cc::trace::{parse, replay, Record};
use sluice_core::cc::{Estimator, EstimatorConfig};

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: cc_replay FILE [INITIAL_BPS]")?;
    let mut config = EstimatorConfig::default();
    if let Some(bps) = args.next() {
        config.initial_bps = bps.parse().map_err(|e| format!("INITIAL_BPS: {e}"))?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let records = parse(&text)?;
    for r in &records {
        if let Record::Cluster { open, id, at } = r {
            let what = if *open { "open" } else { "close" };
            println!("{:>10.3} cluster {id} {what}", at.as_secs_f64());
        }
    }
    let mut estimator = Estimator::new(config);
    replay(&records, &mut estimator, |at, e, probe| {
        let s = e.stats();
        let probe = probe.map_or(String::new(), |p| {
            format!(" probe {} -> {:?}", p.cluster, p.bps)
        });
        println!(
            "{:>10.3} estimate {} delay {} loss {} acked {:?} sent {:?} lossfrac {:.3} {:?}{probe}",
            at.as_secs_f64(),
            s.estimate_bps,
            s.delay_based_bps,
            s.loss_based_bps,
            s.acknowledged_bps,
            s.sent_bps,
            s.loss_fraction,
            s.usage,
        );
    })
}
