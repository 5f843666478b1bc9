//! Classification data: the bundled data sets (iris, wine, digits) and CSV
//! files of numeric feature columns with an integer class label last.

use anyhow::{bail, Context, Result};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The data sets compiled into the binary (see `data/SOURCES.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bundled {
    /// Fisher's iris: 150 rows, 4 features, 3 classes.
    Iris,
    /// Forina's wine: 178 rows, 13 features, 3 classes.
    Wine,
    /// UCI optical digits (8x8): 1797 rows, 64 features, 10 classes.
    Digits,
}

const IRIS_CSV: &str = include_str!("../data/iris.csv");
const WINE_CSV: &str = include_str!("../data/wine_data.csv");
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

impl fmt::Display for Bundled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bundled::Iris => "iris",
            Bundled::Wine => "wine",
            Bundled::Digits => "digits",
        })
    }
}

/// A classification data set held in memory: `rows x cols` features (f64
/// as parsed, in a CPU tensor: one copy of the data) and one class label per
/// row.
#[derive(Debug)]
pub struct Dataset {
    /// Where it came from: a bundled name or a file path.
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    features: Tensor,
    pub labels: Vec<i64>,
    /// One more than the largest label.
    pub classes: usize,
}

impl Dataset {
    /// A bundled data set, parsed by the same CSV reader as user files.
    pub fn bundled(which: Bundled) -> Result<Dataset> {
        let name = which.to_string();
        match which {
            Bundled::Iris => Dataset::from_reader(IRIS_CSV.as_bytes(), &name),
            Bundled::Wine => Dataset::from_reader(WINE_CSV.as_bytes(), &name),
            Bundled::Digits => {
                Dataset::from_reader(flate2::read::GzDecoder::new(DIGITS_CSV_GZ), &name)
            }
        }
    }

    /// Reads a CSV file (streamed: memory holds the parsed numbers only).
    pub fn from_csv(path: &Path) -> Result<Dataset> {
        let shown = path.display().to_string();
        if path.is_dir() {
            bail!("--data {shown}: is a directory, expected a CSV file");
        }
        let file =
            std::fs::File::open(path).with_context(|| format!("--data {shown}: cannot open"))?;
        Dataset::from_reader(file, &shown)
    }

    /// Parses CSV text: numeric feature columns, an integer class label in
    /// the last column. A first line that is not all numbers is a header
    /// and is skipped; blank lines are skipped; `\r\n` line ends work.
    pub fn from_reader(reader: impl Read, name: &str) -> Result<Dataset> {
        let mut reader = BufReader::new(reader);
        let mut features = Vec::new();
        let mut labels = Vec::new();
        let mut cols: Option<usize> = None;
        let mut line_no = 0usize;
        let mut seen_first = false;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = reader
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("{name}: read error after line {line_no}"))?;
            if read == 0 {
                break;
            }
            line_no += 1;
            let line = std::str::from_utf8(&buf).map_err(|e| {
                anyhow::anyhow!(
                    "{name}, line {line_no}: not UTF-8 text (byte {})",
                    e.valid_up_to() + 1
                )
            })?;
            let line = line.trim_end_matches(['\n', '\r']);
            if line.trim().is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if !seen_first {
                seen_first = true;
                if cells.iter().any(|c| c.parse::<f64>().is_err()) {
                    continue; // a header
                }
            }
            let expected = *cols.get_or_insert(cells.len());
            if expected < 2 {
                bail!("{name}, line {line_no}: one column; expected feature columns and a label column");
            }
            if cells.len() != expected {
                bail!(
                    "{name}, line {line_no}: {} columns, expected {expected} like the first data row",
                    cells.len()
                );
            }
            if features.try_reserve(expected - 1).is_err() || labels.try_reserve(1).is_err() {
                bail!(
                    "{name}, line {line_no}: out of memory holding the data ({} rows read)",
                    labels.len()
                );
            }
            for (col, cell) in cells[..expected - 1].iter().enumerate() {
                let value: f64 = cell.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "{name}, line {line_no}, column {}: '{cell}' is not a number",
                        col + 1
                    )
                })?;
                if !value.is_finite() {
                    bail!(
                        "{name}, line {line_no}, column {}: '{cell}' is not a finite number",
                        col + 1
                    );
                }
                features.push(value);
            }
            labels.push(parse_label(cells[expected - 1]).map_err(|why| {
                anyhow::anyhow!("{name}, line {line_no}, column {expected} (the label): {why}")
            })?);
        }
        let Some(cols) = cols else {
            bail!("{name}: no data rows (the file is empty or holds only a header)");
        };
        let classes = labels.iter().max().map_or(0, |m| *m as usize + 1);
        let distinct = {
            let mut seen = vec![false; classes];
            labels.iter().for_each(|&l| seen[l as usize] = true);
            seen.iter().filter(|&&s| s).count()
        };
        if distinct < 2 {
            bail!(
                "{name}: every row has label {}; classification needs at least 2 classes",
                labels[0]
            );
        }
        let (rows, cols) = (labels.len(), cols - 1);
        let features = Tensor::f_from_slice(&features)?.f_view([rows as i64, cols as i64])?;
        Ok(Dataset { name: name.to_string(), rows, cols, features, labels, classes })
    }

    /// The features as an f64 `(rows, cols)` tensor on the CPU (shared, not
    /// copied: do not modify it in place).
    pub fn features_tensor(&self) -> Tensor {
        self.features.shallow_clone()
    }

    /// The labels as an Int64 `(rows,)` tensor on the CPU.
    pub fn labels_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.labels)
    }
}

fn parse_label(cell: &str) -> Result<i64, String> {
    let label = match cell.parse::<i64>() {
        Ok(v) => v,
        Err(_) => match cell.parse::<f64>() {
            Ok(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 => v as i64,
            Ok(_) => return Err(format!("'{cell}' is not a whole number")),
            Err(_) => return Err(format!("'{cell}' is not a class number")),
        },
    };
    if label < 0 {
        return Err(format!("{label} is negative; labels are class numbers 0, 1, 2, ..."));
    }
    if label > 1_000_000 {
        return Err(format!("{label} is too large for a class number (at most 1000000)"));
    }
    Ok(label)
}

/// Row indices of the test and train splits: `randperm(rows)` from
/// libtorch's CPU generator, the first `ceil(rows * test_fraction)` for test,
/// the rest for train (what `scripts/reference.py` does with
/// `torch.randperm`).
pub fn split(rows: usize, test_fraction: f64) -> Result<(Tensor, Tensor)> {
    let (n_test, _) = split_sizes(rows, test_fraction)?;
    let perm = Tensor::f_randperm(rows as i64, (Kind::Int64, Device::Cpu))?;
    let test = perm.narrow(0, 0, n_test as i64);
    let train = perm.narrow(0, n_test as i64, (rows - n_test) as i64);
    Ok((test, train))
}

/// `(test rows, train rows)` of a split, or why it cannot be made.
pub fn split_sizes(rows: usize, test_fraction: f64) -> Result<(usize, usize)> {
    let n_test = (rows as f64 * test_fraction).ceil() as usize;
    if n_test == 0 || n_test >= rows {
        bail!(
            "--test-fraction {test_fraction} of {rows} rows leaves {n_test} for test and {} for training; both need at least one",
            rows.saturating_sub(n_test)
        );
    }
    Ok((n_test, rows - n_test))
}

/// Z-score statistics of features, per column (f64).
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Mean and population standard deviation of each column of `x`
    /// (f64); a constant column gets std 1, so it maps to 0.
    pub fn fit(x: &Tensor) -> Result<Standardizer> {
        let mean = x.f_mean_dim(0, false, None::<Kind>)?;
        let std = x.f_std_correction(0, 0, false)?;
        let std = std.f_masked_fill(&std.eq(0.0), 1.0)?;
        Ok(Standardizer { mean: Vec::<f64>::try_from(&mean)?, std: Vec::<f64>::try_from(&std)? })
    }

    /// `(x - mean) / std` in f64, then f32.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if self.mean.len() as i64 != x.size()[1] {
            bail!(
                "the standardization statistics are for {} features, the data has {}",
                self.mean.len(),
                x.size()[1]
            );
        }
        let mean = Tensor::from_slice(&self.mean);
        let std = Tensor::from_slice(&self.std);
        // In place after the subtraction: one f64 copy of the data, not two
        // (the same kernels, so the same numbers as `(x - mean) / std`).
        let mut z = x.f_sub(&mean)?;
        let _ = z.f_div_(&std)?;
        Ok(z.f_to_kind(Kind::Float)?)
    }
}
