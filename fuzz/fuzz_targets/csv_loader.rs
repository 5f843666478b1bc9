//! The CSV reader on arbitrary bytes: an `Ok` or an `Err`, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = cross_entropy_tch::data::Dataset::from_reader(data, "fuzz") {
        assert_eq!(d.labels.len(), d.rows);
        assert!(d.classes >= 2 && d.cols >= 1);
    }
});
