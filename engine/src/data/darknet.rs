//! Darknet dataset files: `.data`, image lists, `.names`, and YOLO label `.txt` files.
//!
//! Path resolution (Darknet itself resolves every relative path against the current directory,
//! which breaks as soon as a tool runs from elsewhere). Here a relative path is tried, in order:
//! - `.data` values (`train`, `valid`, `names`, `backup`): against the `.data` file's directory,
//!   then as given (current directory);
//! - image-list entries: against the `.data` file's directory (when the list came from a `.data`),
//!   then against the list file's directory, then as given.
//!
//! The first existing candidate wins, so both the "everything relative to the dataset folder"
//! layout and Darknet's classic "run from the darknet folder" layout work.

use std::fs;
use std::path::{Component, Path, PathBuf};

use super::{DataError, Result};

/// A parsed `.data` file. Keys other than the ones below (`eval`, `results`, ...) are ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct DataFile {
    pub path: PathBuf,
    pub classes: usize,
    pub train: PathBuf,
    pub valid: Option<PathBuf>,
    pub names: Option<PathBuf>,
    pub backup: Option<PathBuf>,
    /// A classifier dataset's class names (Darknet's `labels`): an image's class is the label
    /// whose text occurs in its path as the list writes it.
    pub labels: Option<PathBuf>,
    /// k of the top-k accuracy a classifier reports (Darknet's `top`; 5 when not given).
    pub top: Option<usize>,
}

impl DataFile {
    /// Reads and parses a `.data` file (`key = value` lines, `#` comments).
    pub fn load(path: &Path) -> Result<DataFile> {
        let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses `.data` text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<DataFile> {
        let base = parent_dir(path);
        let (mut classes, mut train, mut valid, mut names, mut backup) = (None, None, None, None, None);
        let (mut labels, mut top) = (None, None);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let s = raw.split('#').next().unwrap_or("").trim();
            if s.is_empty() {
                continue;
            }
            let Some((key, value)) = s.split_once('=') else {
                return Err(DataError::parse(path, line, format!("expected `key = value`, found `{s}`")));
            };
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                return Err(DataError::parse(path, line, format!("`{key}` has no value")));
            }
            match key {
                "classes" => {
                    let n: usize = value.parse().map_err(|_| {
                        DataError::parse(path, line, format!("classes must be a positive integer, found `{value}`"))
                    })?;
                    if n == 0 {
                        return Err(DataError::parse(path, line, "classes must be at least 1"));
                    }
                    classes = Some(n);
                }
                "train" => train = Some(resolve_first_existing(&[&base], value)),
                "valid" => valid = Some(resolve_first_existing(&[&base], value)),
                "names" => names = Some(resolve_first_existing(&[&base], value)),
                "backup" => backup = Some(resolve_first_existing(&[&base], value)),
                "labels" => labels = Some(resolve_first_existing(&[&base], value)),
                "top" => {
                    top = Some(value.parse::<usize>().ok().filter(|&k| k > 0).ok_or_else(|| {
                        DataError::parse(path, line, format!("top must be a positive integer, found `{value}`"))
                    })?)
                }
                _ => {} // Darknet's other keys (eval, results, map, ...) do not concern training.
            }
        }
        let missing = |k: &str| DataError::Config(format!("{}: missing `{k} = ...`", path.display()));
        // A classifier's class count may come from its labels file alone.
        let classes = match (classes, &labels) {
            (Some(c), _) => c,
            (None, Some(l)) => read_names(l)?.len(),
            (None, None) => return Err(missing("classes")),
        };
        Ok(DataFile {
            path: path.to_path_buf(),
            labels,
            top,
            classes,
            train: train.ok_or_else(|| missing("train"))?,
            valid,
            names,
            backup,
        })
    }

    /// Directory of the `.data` file (the first anchor for relative paths).
    pub fn dir(&self) -> PathBuf {
        parent_dir(&self.path)
    }

    /// A classifier dataset (it has `labels`).
    pub fn is_classifier(&self) -> bool {
        self.labels.is_some()
    }

    /// Class names from `labels` (a classifier) or `names`, or "0", "1", ... when it gives none.
    pub fn class_names(&self) -> Result<Vec<String>> {
        match self.labels.as_ref().or(self.names.as_ref()) {
            Some(p) => {
                let names = read_names(p)?;
                if names.len() != self.classes {
                    return Err(DataError::Config(format!(
                        "{}: {} names but {} says classes = {}",
                        p.display(),
                        names.len(),
                        self.path.display(),
                        self.classes
                    )));
                }
                Ok(names)
            }
            None => Ok((0..self.classes).map(|c| c.to_string()).collect()),
        }
    }

    /// The training set (`train` list).
    pub fn train_set(&self, policy: LabelPolicy) -> Result<Dataset> {
        if self.is_classifier() {
            return Dataset::from_class_list(&self.train, Some(&self.dir()), &self.class_names()?);
        }
        Dataset::from_list(&self.train, Some(&self.dir()), self.classes, policy)
    }

    /// The validation set (`valid` list; Darknet falls back to a default path, we require it).
    pub fn valid_set(&self, policy: LabelPolicy) -> Result<Dataset> {
        let valid = self.valid.as_ref().ok_or_else(|| {
            DataError::Config(format!("{}: no `valid = ...` list", self.path.display()))
        })?;
        if self.is_classifier() {
            return Dataset::from_class_list(valid, Some(&self.dir()), &self.class_names()?);
        }
        Dataset::from_list(valid, Some(&self.dir()), self.classes, policy)
    }
}

/// Reads a `.names` file: one class name per line; trailing blank lines ignored.
pub fn read_names(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while names.last().is_some_and(|n| n.is_empty()) {
        names.pop();
    }
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(DataError::parse(path, i + 1, "empty class name"));
    }
    Ok(names)
}

/// One ground-truth box of a label file: class and normalised centre/size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Label {
    pub class: u32,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// What to do with a bad label line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LabelPolicy {
    /// A bad line is an error naming file:line.
    #[default]
    Strict,
    /// A bad line is skipped and reported as a warning (`file:line: why`).
    SkipWithWarning,
}

/// One image of a dataset with its labels (empty = background image).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub image: PathBuf,
    /// The label file found for the image; `None` = no label file (background).
    pub label_file: Option<PathBuf>,
    pub labels: Vec<Label>,
}

/// A list of images with their labels, all parsed up front so bad data fails at start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub list: PathBuf,
    pub classes: usize,
    pub samples: Vec<Sample>,
    /// Skipped label lines (only with [`LabelPolicy::SkipWithWarning`]), as `file:line: why`.
    pub warnings: Vec<String>,
}

impl Dataset {
    /// Reads an image list (one path per line, blank lines ignored) and every image's labels.
    /// `data_dir` is the directory of the `.data` file the list came from, if any (see module doc).
    pub fn from_list(list: &Path, data_dir: Option<&Path>, classes: usize, policy: LabelPolicy) -> Result<Dataset> {
        let mut samples = Vec::new();
        let mut warnings = Vec::new();
        for_each_entry(list, data_dir, |ListEntry { image, .. }| {
            let label_file = find_label_file(&image);
            let labels = match &label_file {
                Some(lf) => read_labels(lf, classes, policy, &mut warnings)?,
                None => Vec::new(),
            };
            samples.push(Sample { image, label_file, labels });
            Ok(())
        })?;
        if samples.is_empty() {
            return Err(DataError::Config(format!("{}: the image list is empty", list.display())));
        }
        Ok(Dataset { list: list.to_path_buf(), classes, samples, warnings })
    }

    /// A classifier's image list: each image's class is the one label whose text occurs in the
    /// entry as the list writes it (Darknet matches the same way, but sets every label that
    /// matches; here none or several is an error naming the list's line). The class becomes one
    /// box covering the whole image, so the loader and the detectors' tooling carry it unchanged.
    pub fn from_class_list(list: &Path, data_dir: Option<&Path>, labels: &[String]) -> Result<Dataset> {
        let mut samples = Vec::new();
        for_each_entry(list, data_dir, |ListEntry { line, entry, image }| {
            let entry = entry.as_str();
            let found: Vec<usize> = labels.iter().enumerate().filter(|(_, l)| !l.is_empty() && entry.contains(l.as_str())).map(|(c, _)| c).collect();
            let class = match found.as_slice() {
                [c] => *c,
                [] => return Err(DataError::parse(list, line, format!("`{entry}` contains none of the labels"))),
                several => {
                    let names: Vec<&str> = several.iter().map(|&c| labels[c].as_str()).collect();
                    return Err(DataError::parse(list, line, format!("`{entry}` contains several labels ({}): its class is ambiguous", names.join(", "))));
                }
            };
            let whole = Label { class: class as u32, x: 0.5, y: 0.5, w: 1.0, h: 1.0 };
            samples.push(Sample { image, label_file: None, labels: vec![whole] });
            Ok(())
        })?;
        if samples.is_empty() {
            return Err(DataError::Config(format!("{}: the image list is empty", list.display())));
        }
        Ok(Dataset { list: list.to_path_buf(), classes: labels.len(), samples, warnings: Vec::new() })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Opens every image: its header (`full = false`), or a whole decode (`full = true`, what
    /// training does, so a damaged body is found too). Runs on every core; the error is that of
    /// the first bad image in list order.
    pub fn check_images(&self, full: bool) -> Result<()> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(16);
        let chunk = self.samples.len().div_ceil(threads).max(1);
        let check = |s: &Sample| -> Result<()> {
            if full {
                super::image::RgbImage::load(&s.image).map(|_| ())
            } else {
                super::image::RgbImage::check_header(&s.image).map(|_| ())
            }
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .samples
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().try_for_each(check)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(DataError::Loader("an image check thread panicked".into()))))
                .collect::<Result<Vec<()>>>()
                .map(|_| ())
        })
    }

    /// Number of ground-truth boxes per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for l in self.samples.iter().flat_map(|s| &s.labels) {
            counts[l.class as usize] += 1;
        }
        counts
    }
}

/// Where Darknet looks for an image's labels, in order: the image path with its extension
/// replaced by `.txt`; then the same with the last `images` path component replaced by `labels`;
/// then with the last `JPEGImages` component replaced by `labels` (VOC layout).
pub fn label_path_candidates(image: &Path) -> Vec<PathBuf> {
    let mut out = vec![image.with_extension("txt")];
    for dir_name in ["images", "JPEGImages"] {
        let comps: Vec<Component> = image.components().collect();
        // The file name itself is never replaced: only directory components.
        let last_dir = comps.len().saturating_sub(1);
        if let Some(pos) = comps[..last_dir].iter().rposition(|c| c.as_os_str() == dir_name) {
            let mut p = PathBuf::new();
            for (k, c) in comps.iter().enumerate() {
                if k == pos {
                    p.push("labels");
                } else {
                    p.push(c.as_os_str());
                }
            }
            let p = p.with_extension("txt");
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The first existing label file among [`label_path_candidates`]; `None` = background image.
pub fn find_label_file(image: &Path) -> Option<PathBuf> {
    label_path_candidates(image).into_iter().find(|p| p.is_file())
}

/// Parses a label file. Each line is `class x y w h` (normalised centre and size, all in [0,1];
/// class an integer in [0, classes)). Blank lines are ignored. Boxes whose edges stick out of the
/// image are kept here and clamped later, like Darknet.
pub fn read_labels(path: &Path, classes: usize, policy: LabelPolicy, warnings: &mut Vec<String>) -> Result<Vec<Label>> {
    let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    parse_labels(&text, path, classes, policy, warnings)
}

/// [`read_labels`] on text already read (`path` names it in errors and warnings).
pub fn parse_labels(text: &str, path: &Path, classes: usize, policy: LabelPolicy, warnings: &mut Vec<String>) -> Result<Vec<Label>> {
    let mut labels = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match parse_label_line(line, classes) {
            Ok(l) => labels.push(l),
            Err(msg) => match policy {
                LabelPolicy::Strict => return Err(DataError::parse(path, i + 1, msg)),
                LabelPolicy::SkipWithWarning => {
                    warnings.push(format!("{}:{}: {} (line skipped)", path.display(), i + 1, crate::cfg::clip(&msg)))
                }
            },
        }
    }
    Ok(labels)
}

fn parse_label_line(line: &str, classes: usize) -> std::result::Result<Label, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected 5 fields `class x y w h`, found {}", fields.len()));
    }
    let class: i64 = fields[0]
        .parse()
        .map_err(|_| format!("class `{}` is not an integer", fields[0]))?;
    if class < 0 || class as u64 >= classes as u64 {
        return Err(format!("class {class} out of range (classes = {classes})"));
    }
    let mut v = [0f32; 4];
    for (k, name) in ["x", "y", "w", "h"].iter().enumerate() {
        let s = fields[k + 1];
        let x: f32 = s.parse().map_err(|_| format!("{name} `{s}` is not a number"))?;
        if !x.is_finite() || !(0.0..=1.0).contains(&x) {
            return Err(format!("{name} = {s} is outside [0,1]"));
        }
        v[k] = x;
    }
    Ok(Label { class: class as u32, x: v[0], y: v[1], w: v[2], h: v[3] })
}

/// One image of a list file: its 1-based line, the entry as written, the path it resolves to.
struct ListEntry {
    line: usize,
    entry: String,
    image: PathBuf,
}

/// Calls `each` on the non-empty entries of an image list in order, each resolved against
/// `data_dir` (if any) and then the list's own folder; an image that does not exist is an error
/// naming the line (raised when the walk reaches it, after the earlier entries' own errors).
fn for_each_entry(list: &Path, data_dir: Option<&Path>, mut each: impl FnMut(ListEntry) -> Result<()>) -> Result<()> {
    let text = fs::read_to_string(list).map_err(|e| DataError::io(list, e))?;
    let list_dir = parent_dir(list);
    let anchors: Vec<&Path> = data_dir.into_iter().chain([list_dir.as_path()]).collect();
    for (i, raw) in text.lines().enumerate() {
        let entry = raw.trim();
        if entry.is_empty() {
            continue;
        }
        let image = resolve_first_existing(&anchors, entry);
        if !image.is_file() {
            return Err(DataError::parse(list, i + 1, format!("image `{entry}` not found")));
        }
        each(ListEntry { line: i + 1, entry: entry.to_string(), image })?;
    }
    Ok(())
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `value` if absolute; else the first of `anchor/value` (in order) and `value` (current
/// directory) that exists; else `anchors[0]/value` so that the later error names a sensible path.
fn resolve_first_existing(anchors: &[&Path], value: &str) -> PathBuf {
    let v = Path::new(value);
    if v.is_absolute() {
        return v.to_path_buf();
    }
    let mut candidates: Vec<PathBuf> = anchors.iter().map(|a| a.join(v)).collect();
    candidates.push(v.to_path_buf());
    candidates
        .iter()
        .find(|c| c.exists())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_line_errors() {
        assert!(parse_label_line("0 0.5 0.5 0.2 0.2", 1).is_ok());
        assert!(parse_label_line("1 0.5 0.5 0.2 0.2", 1).unwrap_err().contains("out of range"));
        assert!(parse_label_line("-1 0.5 0.5 0.2 0.2", 2).unwrap_err().contains("out of range"));
        assert!(parse_label_line("0 0.5 0.5 0.2", 1).unwrap_err().contains("5 fields"));
        assert!(parse_label_line("0 a 0.5 0.2 0.2", 1).unwrap_err().contains("not a number"));
        assert!(parse_label_line("0 0.5 1.5 0.2 0.2", 1).unwrap_err().contains("outside"));
        assert!(parse_label_line("0 0.5 0.5 NaN 0.2", 1).unwrap_err().contains("outside"));
        assert!(parse_label_line("0.5 0.5 0.5 0.2 0.2", 1).unwrap_err().contains("integer"));
    }

    #[test]
    fn label_candidates_replace_directories_only() {
        let c = label_path_candidates(Path::new("/d/images/train/a.jpg"));
        assert_eq!(c, vec![PathBuf::from("/d/images/train/a.txt"), PathBuf::from("/d/labels/train/a.txt")]);
        let c = label_path_candidates(Path::new("VOC/JPEGImages/images.png"));
        assert_eq!(c, vec![PathBuf::from("VOC/JPEGImages/images.txt"), PathBuf::from("VOC/labels/images.txt")]);
    }
}
