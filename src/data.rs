//! Classification data: the bundled data sets (iris, wine, digits) and CSV
//! files of numeric feature columns with an integer class label last.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::str::FromStr;
use tch::{Device, Kind, TchError, Tensor};

/// The data sets compiled into the binary (see `data/SOURCES.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Bundled {
    /// Every bundled data set, in the order `--help` lists them.
    pub const ALL: [Bundled; 3] = [Bundled::Iris, Bundled::Wine, Bundled::Digits];

    /// The name the data set goes by (`iris`, `wine`, `digits`).
    pub fn name(self) -> &'static str {
        match self {
            Bundled::Iris => "iris",
            Bundled::Wine => "wine",
            Bundled::Digits => "digits",
        }
    }

    /// One line about the data set: where it is from and its size.
    pub fn about(self) -> &'static str {
        match self {
            Bundled::Iris => "Fisher's iris: 150 rows, 4 features, 3 classes",
            Bundled::Wine => "Forina's wine: 178 rows, 13 features, 3 classes",
            Bundled::Digits => "UCI optical digits (8x8): 1797 rows, 64 features, 10 classes",
        }
    }
}

impl fmt::Display for Bundled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bundled {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bundled::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Bundled::ALL.iter().map(|b| b.name()).collect();
            format!("no bundled data set '{s}' (there are {})", names.join(", "))
        })
    }
}

/// Why a data set could not be read: where (line and column, counting from
/// 1, when the problem is in one place) and what. It does not name the file:
/// the caller knows which file it passed, as with `std::fs` errors.
#[derive(Debug)]
pub struct DataError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub problem: DataProblem,
}

/// What is wrong with a data set.
#[derive(Debug)]
pub enum DataProblem {
    /// The path is a directory.
    IsDirectory,
    /// The file could not be opened.
    Open(std::io::Error),
    /// Reading failed part way.
    Read(std::io::Error),
    /// A line is not UTF-8; `byte` counts from 1 within the line.
    NotUtf8 { byte: usize },
    /// The first data row has a single column: no label, or no features.
    OneColumn,
    /// A row with another number of columns than the first data row.
    Ragged { got: usize, expected: usize },
    /// A feature cell that does not parse as a number.
    NotANumber(String),
    /// A feature cell that parses as NaN or an infinity.
    NotFinite(String),
    /// A label that is not a class number (the reason).
    Label(String),
    /// No memory left for the rows read so far.
    OutOfMemory { rows: usize },
    /// Nothing but blank lines and a header.
    NoRows,
    /// Every row has the same label.
    OneClass(i64),
    /// libtorch refused to hold the data.
    Torch(TchError),
}

impl DataError {
    fn at(line: usize, column: Option<usize>, problem: DataProblem) -> DataError {
        DataError { line: Some(line), column, problem }
    }

    fn whole(problem: DataProblem) -> DataError {
        DataError { line: None, column: None, problem }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = if matches!(self.problem, DataProblem::Label(_)) { " (the label)" } else { "" };
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}{label}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        match &self.problem {
            DataProblem::IsDirectory => write!(f, "is a directory, expected a CSV file"),
            DataProblem::Open(e) => write!(f, "cannot open: {e}"),
            DataProblem::Read(e) => write!(f, "read error: {e}"),
            DataProblem::NotUtf8 { byte } => write!(f, "not UTF-8 text (byte {byte})"),
            DataProblem::OneColumn => {
                write!(f, "one column; expected feature columns and a label column")
            }
            DataProblem::Ragged { got, expected } => {
                write!(f, "{got} columns, expected {expected} like the first data row")
            }
            DataProblem::NotANumber(cell) => write!(f, "'{cell}' is not a number"),
            DataProblem::NotFinite(cell) => write!(f, "'{cell}' is not a finite number"),
            DataProblem::Label(why) => f.write_str(why),
            DataProblem::OutOfMemory { rows } => {
                write!(f, "out of memory holding the data ({rows} rows read)")
            }
            DataProblem::NoRows => {
                write!(f, "no data rows (the file is empty or holds only a header)")
            }
            DataProblem::OneClass(label) => {
                write!(f, "every row has label {label}; classification needs at least 2 classes")
            }
            DataProblem::Torch(e) => write!(f, "libtorch: {e}"),
        }
    }
}

/// The I/O and libtorch errors are part of the message, not a `source`, so
/// that a printed chain does not say them twice.
impl std::error::Error for DataError {}

/// A classification data set held in memory: `rows x features` values (f64
/// as parsed, in a CPU tensor: one copy of the data) and one class label per
/// row.
#[derive(Debug)]
pub struct Dataset {
    /// Where it came from: a bundled name or a file path.
    pub name: String,
    pub rows: usize,
    /// Feature columns per row.
    pub features: usize,
    values: Tensor,
    pub labels: Vec<i64>,
    /// One more than the largest label.
    pub classes: usize,
}

impl Dataset {
    /// A bundled data set, parsed by the same CSV reader as user files.
    pub fn bundled(which: Bundled) -> Result<Dataset, DataError> {
        let name = which.name();
        match which {
            Bundled::Iris => Dataset::from_reader(IRIS_CSV.as_bytes(), name),
            Bundled::Wine => Dataset::from_reader(WINE_CSV.as_bytes(), name),
            Bundled::Digits => {
                Dataset::from_reader(flate2::read::GzDecoder::new(DIGITS_CSV_GZ), name)
            }
        }
    }

    /// Reads a CSV file (streamed: memory holds the parsed numbers only).
    /// The data set is named after the path.
    pub fn from_csv(path: &Path) -> Result<Dataset, DataError> {
        if path.is_dir() {
            return Err(DataError::whole(DataProblem::IsDirectory));
        }
        let file = std::fs::File::open(path).map_err(|e| DataError::whole(DataProblem::Open(e)))?;
        let size = file.metadata().map_or(0, |m| m.len());
        Dataset::read(file, &path.display().to_string(), size)
    }

    /// Parses CSV text: numeric feature columns, an integer class label in
    /// the last column. A first line that is not all numbers is a header
    /// and is skipped; blank lines are skipped; `\r\n` line ends work.
    pub fn from_reader(reader: impl Read, name: &str) -> Result<Dataset, DataError> {
        Dataset::read(reader, name, 0)
    }

    /// [`Dataset::from_reader`] of `size` bytes (0: unknown): after the first
    /// data row, room for the rows that size implies (plus 10%) is reserved
    /// at once, so the numbers are not copied into ever larger buffers as
    /// they grow (whose old copies an allocator that keeps freed pages
    /// would hold on to).
    fn read(reader: impl Read, name: &str, size: u64) -> Result<Dataset, DataError> {
        let mut reader = BufReader::new(reader);
        let mut values = Vec::new();
        let mut labels = Vec::new();
        let mut cols: Option<usize> = None;
        let mut line_no = 0usize;
        let mut seen_first = false;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = reader.read_until(b'\n', &mut buf).map_err(|e| DataError {
                line: Some(line_no + 1),
                column: None,
                problem: DataProblem::Read(e),
            })?;
            if read == 0 {
                break;
            }
            line_no += 1;
            let line = std::str::from_utf8(&buf).map_err(|e| {
                DataError::at(line_no, None, DataProblem::NotUtf8 { byte: e.valid_up_to() + 1 })
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
                return Err(DataError::at(line_no, None, DataProblem::OneColumn));
            }
            if cells.len() != expected {
                let got = cells.len();
                return Err(DataError::at(line_no, None, DataProblem::Ragged { got, expected }));
            }
            let rows_left = if labels.is_empty() && size > 0 {
                // The first data row: the file's rows, estimated from its length.
                (size / (line.len() as u64 + 1)).saturating_mul(11) / 10 + 1
            } else {
                1
            };
            let rows_left = usize::try_from(rows_left).unwrap_or(usize::MAX);
            let reserved = values.try_reserve(rows_left.saturating_mul(expected - 1)).is_ok()
                && labels.try_reserve(rows_left).is_ok();
            // A reservation of the estimate that fails is only an estimate;
            // one row that fails is out of memory.
            if !reserved
                && (values.try_reserve(expected - 1).is_err() || labels.try_reserve(1).is_err())
            {
                let rows = labels.len();
                return Err(DataError::at(line_no, None, DataProblem::OutOfMemory { rows }));
            }
            for (col, cell) in cells[..expected - 1].iter().enumerate() {
                let at = |problem| DataError::at(line_no, Some(col + 1), problem);
                let value: f64 =
                    cell.parse().map_err(|_| at(DataProblem::NotANumber(cell.to_string())))?;
                if !value.is_finite() {
                    return Err(at(DataProblem::NotFinite(cell.to_string())));
                }
                values.push(value);
            }
            labels.push(
                parse_label(cells[expected - 1]).map_err(|why| {
                    DataError::at(line_no, Some(expected), DataProblem::Label(why))
                })?,
            );
        }
        let Some(cols) = cols else {
            return Err(DataError::whole(DataProblem::NoRows));
        };
        let classes = labels.iter().max().map_or(0, |m| *m as usize + 1);
        let distinct = {
            let mut seen = vec![false; classes];
            labels.iter().for_each(|&l| seen[l as usize] = true);
            seen.iter().filter(|&&s| s).count()
        };
        if distinct < 2 {
            return Err(DataError::whole(DataProblem::OneClass(labels[0])));
        }
        let (rows, features) = (labels.len(), cols - 1);
        let values = Tensor::f_from_slice(&values)
            .and_then(|t| t.f_view([rows as i64, features as i64]))
            .map_err(|e| DataError::whole(DataProblem::Torch(e)))?;
        Ok(Dataset { name: name.to_string(), rows, features, values, labels, classes })
    }

    /// The features as an f64 `(rows, features)` tensor on the CPU (shared,
    /// not copied: do not modify it in place).
    pub fn features_tensor(&self) -> Tensor {
        self.values.shallow_clone()
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
pub fn split(rows: usize, test_fraction: f64) -> Result<(Tensor, Tensor), SplitError> {
    let (n_test, _) = split_sizes(rows, test_fraction)?;
    let perm =
        Tensor::f_randperm(rows as i64, (Kind::Int64, Device::Cpu)).map_err(SplitError::Torch)?;
    let test = perm.narrow(0, 0, n_test as i64);
    let train = perm.narrow(0, n_test as i64, (rows - n_test) as i64);
    Ok((test, train))
}

/// `(test rows, train rows)` of a split, or why it cannot be made.
pub fn split_sizes(rows: usize, test_fraction: f64) -> Result<(usize, usize), SplitError> {
    let test = (rows as f64 * test_fraction).ceil() as usize;
    if test == 0 || test >= rows {
        let train = rows.saturating_sub(test);
        return Err(SplitError::Sizes { rows, test_fraction, test, train });
    }
    Ok((test, rows - test))
}

/// Why a train/test split cannot be made.
#[derive(Debug)]
pub enum SplitError {
    /// The fraction leaves one side empty.
    Sizes {
        rows: usize,
        test_fraction: f64,
        test: usize,
        train: usize,
    },
    Torch(TchError),
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitError::Sizes { rows, test_fraction, test, train } => write!(
                f,
                "a test fraction of {test_fraction} takes {test} of {rows} rows for test (rounded up) and leaves {train} for training; both need at least one"
            ),
            SplitError::Torch(e) => write!(f, "libtorch: {e}"),
        }
    }
}

impl std::error::Error for SplitError {}

/// Z-score statistics of features, per column (f64).
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Mean and population standard deviation of each column of `x`
    /// (f64); a constant column gets std 1, so it maps to 0.
    pub fn fit(x: &Tensor) -> Result<Standardizer, TchError> {
        let mean = x.f_mean_dim(0, false, None::<Kind>)?;
        let std = x.f_std_correction(0, 0, false)?;
        let std = std.f_masked_fill(&std.eq(0.0), 1.0)?;
        Ok(Standardizer { mean: Vec::<f64>::try_from(&mean)?, std: Vec::<f64>::try_from(&std)? })
    }

    /// `(x - mean) / std` in f64, then f32.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor, TchError> {
        if self.mean.len() as i64 != x.size()[1] {
            return Err(TchError::Shape(format!(
                "the standardization statistics are for {} features, the data has {}",
                self.mean.len(),
                x.size()[1]
            )));
        }
        let mean = Tensor::from_slice(&self.mean);
        let std = Tensor::from_slice(&self.std);
        // In place after the subtraction: one f64 copy of the data, not two
        // (the same kernels, so the same numbers as `(x - mean) / std`).
        let mut z = x.f_sub(&mean)?;
        let _ = z.f_div_(&std)?;
        z.f_to_kind(Kind::Float)
    }
}
