//! The group-map format over any text: a map whose every lookup answers,
//! or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segql_udfs::SegmentMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(map) = SegmentMap::parse(text) {
        let scale = map.scale();
        assert!((2..=10).contains(&scale), "scale {scale} accepted");
        for r in 0..=scale + 1 {
            for f in 0..=scale + 1 {
                let _ = map.lookup(r, f, None);
                let _ = map.lookup(r, f, Some(scale));
            }
        }
        let scheme = segql::segment::rfm::RfmScheme {
            bins: u8::try_from(scale).unwrap_or(5),
            groups: std::sync::Arc::new(map),
            ..Default::default()
        };
        let _ = scheme.check();
    }
});
