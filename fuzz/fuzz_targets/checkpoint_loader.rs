//! The checkpoint reader on arbitrary bytes: an `Ok` or an `Err`, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = cross_entropy_tch::checkpoint::Checkpoint::from_bytes(data) {
        let sizes = ck.sizes();
        assert_eq!(ck.layers.len() + 1, sizes.len());
        for (layer, io) in ck.layers.iter().zip(sizes.windows(2)) {
            assert_eq!((layer.weight.len(), layer.bias.len()), (io[0] * io[1], io[1]));
        }
    }
});
