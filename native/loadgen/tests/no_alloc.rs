//! No heap allocation per packet in steady state: a counting global allocator over the whole
//! process while raw-mode endpoints and the raw relay exchange media. Allowed: one new per-second
//! series entry per worker each second (a histogram box and the vector growing), nothing per packet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_loadgen::relay::RawRelay;
use sluice_loadgen::{LoadGen, LoadGenConfig, MediaConfig, Mode, Sources};
use sluice_testutil::counting_alloc::{counted, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn sending_receiving_and_relaying_allocate_nothing_per_packet() {
    for shared_sockets in [true, false] {
        steady_state(shared_sockets);
    }
}

fn steady_state(shared_sockets: bool) {
    const THREADS: usize = 2;
    let mut relay = RawRelay::bind("127.0.0.1:0".parse().expect("literal")).expect("relay");
    let addr = relay.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        relay.run(&stop2);
        relay.stats()
    });
    let mut lg = LoadGen::new(LoadGenConfig {
        threads: THREADS,
        shared_sockets,
        mode: Mode::Raw,
        media: MediaConfig {
            video_bitrate_bps: 2_000_000,
            ..MediaConfig::default()
        },
        ..LoadGenConfig::default()
    })
    .expect("loadgen");
    for g in 0..2 {
        for l in lg.create_endpoints(4, g).expect("endpoints") {
            lg.set_sources(l.index, Sources::for_endpoint(l.index, 3))
                .expect("sources");
            lg.connect_raw(l.index, addr).expect("connect");
        }
    }
    assert!(lg.wait_connected(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    lg.start();
    // Warm-up: every stream tracker exists and the first series entries are there.
    std::thread::sleep(Duration::from_millis(1200));
    let before = lg.snapshot(false).totals;
    let ((), allocs) = counted(|| std::thread::sleep(Duration::from_millis(1500)));
    let after = lg.snapshot(false).totals;
    lg.stop(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let relayed = thread.join().expect("relay").packets_out;

    eprintln!("shared sockets {shared_sockets}: {allocs} allocations in the window");
    let packets =
        (after.sent_packets - before.sent_packets) + (after.recv_packets - before.recv_packets);
    assert!(packets > 10_000, "only {packets} packets in the window");
    assert!(relayed > 10_000);
    // At most two seconds begin in a 1.5 s window: per worker one histogram and one vector growth each.
    assert!(
        allocs <= (2 * 2 * THREADS) as u64,
        "{allocs} allocations while handling {packets} packets"
    );
}
