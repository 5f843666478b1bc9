//! Every input under `fuzz/regressions/` (seeds, and any crash the fuzzers
//! of `scripts/fuzz.sh` ever found) through the CSV and checkpoint readers:
//! an `Ok` that keeps the readers' invariants, or an `Err`, never a panic.

mod common;

use cross_entropy_tch::checkpoint::Checkpoint;
use cross_entropy_tch::data::Dataset;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = common::root().join("fuzz/regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn csv_reader_regressions() {
    let files = inputs("csv_loader");
    assert!(!files.is_empty());
    for (name, bytes) in files {
        let result = std::panic::catch_unwind(|| {
            Dataset::from_reader(bytes.as_slice(), "fuzz")
                .map(|d| (d.rows, d.labels.len(), d.classes))
        });
        match result {
            Err(_) => panic!("{name}: the CSV reader panicked"),
            Ok(Ok((rows, labels, classes))) => assert!(rows == labels && classes >= 2, "{name}"),
            Ok(Err(_)) => {}
        }
    }
}

#[test]
fn checkpoint_reader_regressions() {
    let mut files = inputs("checkpoint_loader");
    // Plus every prefix of a real checkpoint: truncation at any byte.
    use cross_entropy_tch::checkpoint::LinearParams;
    let real = Checkpoint {
        layers: vec![
            LinearParams { weight: vec![0.5; 20], bias: vec![0.1; 5] },
            LinearParams { weight: vec![-0.5; 15], bias: vec![0.2; 3] },
        ],
        classes: 3,
        features: 4,
        hidden: vec![5],
        standardizer: Some(cross_entropy_tch::data::Standardizer {
            mean: vec![1.0; 4],
            std: vec![2.0; 4],
        }),
    };
    let bytes = real.to_bytes().unwrap();
    assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), real);
    for cut in 0..bytes.len() {
        files.push((format!("prefix of {cut} bytes"), bytes[..cut].to_vec()));
    }
    for (name, bytes) in files {
        let result = std::panic::catch_unwind(|| {
            Checkpoint::from_bytes(&bytes).map(|c| {
                let sizes = c.sizes();
                let got: Vec<(usize, usize)> =
                    c.layers.iter().map(|l| (l.weight.len(), l.bias.len())).collect();
                let want: Vec<(usize, usize)> =
                    sizes.windows(2).map(|io| (io[0] * io[1], io[1])).collect();
                (got, want)
            })
        });
        match result {
            Err(_) => panic!("{name}: the checkpoint reader panicked"),
            Ok(Ok((a, b))) => assert_eq!(a, b, "{name}"),
            Ok(Err(_)) => {}
        }
    }
}

#[test]
fn pt_reader_regressions() {
    // The seeds (state dicts, and files holding a call or a nested dict,
    // which are refused), every prefix of a real .pt and single-byte
    // changes through it: an Ok of a consistent model or an Err, never a
    // panic.
    let mut files = inputs("pt_loader");
    let real = files.iter().find(|(n, _)| n.ends_with("ordered-dict.pt")).unwrap().1.clone();
    for cut in (0..real.len()).step_by(7) {
        files.push((format!("prefix of {cut} bytes"), real[..cut].to_vec()));
    }
    for at in (0..real.len()).step_by(13) {
        let mut changed = real.clone();
        changed[at] ^= 0x5a;
        files.push((format!("byte {at} changed"), changed));
    }
    let dir = std::env::temp_dir().join(format!("pt-regressions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("input.pt");
    let mut loaded = 0;
    for (name, bytes) in &files {
        std::fs::write(&path, bytes).unwrap();
        let result = std::panic::catch_unwind(|| Checkpoint::from_pt(&path));
        match result {
            Err(_) => panic!("{name}: the .pt reader panicked"),
            Ok(Ok(ck)) => {
                let sizes = ck.sizes();
                for (layer, io) in ck.layers.iter().zip(sizes.windows(2)) {
                    assert_eq!(
                        (layer.weight.len(), layer.bias.len()),
                        (io[0] * io[1], io[1]),
                        "{name}"
                    );
                }
                loaded += 1;
            }
            Ok(Err(_)) => {}
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let refused = |seed: &str| {
        let bytes = &files.iter().find(|(n, _)| n.ends_with(seed)).unwrap().1;
        let p = std::env::temp_dir().join(format!("pt-seed-{}-{seed}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        let r = Checkpoint::from_pt(&p);
        std::fs::remove_file(&p).unwrap();
        r.is_err()
    };
    assert!(refused("a-call-in-the-dict.pt") && refused("nested.pt"));
    assert!(loaded >= 2, "the seed state dicts load ({loaded} loaded)");
}

#[test]
fn a_safetensors_header_that_looks_like_a_pickle_still_reads() {
    // A safetensors file starts with its header's length, little-endian: a
    // length of 0x0180 to 0x05ff makes its first bytes 0x80 0x0N, a pickle's
    // protocol mark. Found when a 452-byte checkpoint was read as a .pt.
    use cross_entropy_tch::checkpoint::LinearParams;
    let ck = Checkpoint {
        layers: vec![LinearParams { weight: vec![0.25; 12], bias: vec![0.5; 3] }],
        classes: 3,
        features: 4,
        hidden: vec![],
        standardizer: None,
    };
    let bytes = (0..400)
        .map(|pad| {
            let meta = std::collections::HashMap::from([("pad".to_string(), "x".repeat(pad))]);
            ck.to_bytes_with(vec![], meta).unwrap()
        })
        .find(|b| b[0] == 0x80 && b[1] <= 5)
        .expect("a padding that makes the header length 0x80 0x0N");
    let path = std::env::temp_dir().join(format!("pickle-like-{}.safetensors", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let read = Checkpoint::read(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(read.unwrap(), ck);
}
