//! The checkpoint reader on arbitrary bytes: an `Ok` or an `Err`, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = cross_entropy_tch::checkpoint::Checkpoint::from_bytes(data) {
        assert_eq!(ck.weight.len(), ck.classes * ck.features);
        assert_eq!(ck.bias.len(), ck.classes);
    }
});
