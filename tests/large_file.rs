//! A large CSV streams: the binary's peak memory grows with the file by a
//! small factor (the parsed f64 features held once, plus the training
//! copies), not by 10x. Measured on a 200 MB file against the same binary on
//! iris; README quotes a 1 GB run (3.1 GB peak).

mod common;

use std::io::Write;
use std::path::Path;

/// Runs the binary and returns its peak RSS in bytes (wait4's rusage of that
/// one child).
#[allow(clippy::zombie_processes)] // wait4 below reaps the child
fn peak_rss(args: &[&str]) -> u64 {
    let child = common::bin()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{args:?} failed");
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn a_large_csv_costs_a_few_times_its_size() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("large.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "a,b,c,d,e,f,g,h,i,j,label").unwrap();
    let mut rng = common::Rng(7);
    let mut size = 0usize;
    while size < 200_000_000 {
        let mut line = String::new();
        for _ in 0..10 {
            line += &format!("{:.4},", rng.uniform(-10.0, 10.0));
        }
        line += &format!("{}\n", rng.below(3));
        size += line.len();
        f.write_all(line.as_bytes()).unwrap();
    }
    drop(f);
    let file = std::fs::metadata(&path).unwrap().len();
    let common = ["train", "--epochs", "1", "--quiet", "--device", "cpu", "--threads", "1"];
    let base = peak_rss(&[&common[..], &["--dataset", "iris"]].concat());
    let big = peak_rss(&[&common[..], &["--data", path.to_str().unwrap()]].concat());
    let growth = big.saturating_sub(base) as f64 / file as f64;
    std::fs::remove_file(&path).unwrap();
    eprintln!(
        "peak RSS: {} MB on iris, {} MB on a {} MB CSV ({growth:.2}x the file)",
        base >> 20,
        big >> 20,
        file >> 20
    );
    // What the growth holds, per byte of this CSV (about 7.7 bytes per value):
    // the features once as f64 (1.05x), their f32 tensor (0.5x), the
    // standardized train and test splits (0.5x together), the labels as i64
    // (0.1x): 2.2x live at most, plus the reader's 10% head-room (its
    // vectors are reserved from the file's size). glibc's malloc returns
    // each large temporary of the setup (the f64 vector once it is a tensor,
    // the standardization's intermediates) to the OS when it is freed: 2.66x
    // measured. The default build's jemalloc keeps freed pages for reuse
    // (build-notes: it removes the large steps' page faults), so some of
    // those temporaries stay resident: 3.40x measured. The bounds are those
    // with 10% to spare and some more for the allocators' slack; a second
    // f64 copy of the features held for good would be 4.5x.
    let bound = if cfg!(feature = "jemalloc") { 3.8 } else { 2.95 };
    assert!(growth < bound, "peak memory grew by {growth:.2}x the file size (bound {bound}x)");
}
