//! The `.pt` reader on arbitrary bytes: an `Ok` that keeps the checkpoint's
//! invariants, or an `Err`, never a panic (and nothing run).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("pt-fuzz-{}.pt", std::process::id()));
    std::fs::write(&path, data).unwrap();
    if let Ok(ck) = cross_entropy_tch::checkpoint::Checkpoint::from_pt(&path) {
        let sizes = ck.sizes();
        assert_eq!(ck.layers.len() + 1, sizes.len());
        for (layer, io) in ck.layers.iter().zip(sizes.windows(2)) {
            assert_eq!((layer.weight.len(), layer.bias.len()), (io[0] * io[1], io[1]));
        }
    }
});
