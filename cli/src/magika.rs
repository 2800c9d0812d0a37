//! Client side of the Magika demo model: feature extraction before inference and decoding after it.
//!
//! [Magika](https://github.com/google/magika) is Google's file-type classifier. The enclave serves its ONNX model
//! (`models/sample/magika/model.onnx`, model `standard_v3_3` from the `magika==1.0.3` wheel, see
//! `models/sample/magika/PROVENANCE.md`); the file itself never leaves the client, only its features do (and they
//! go to an attested enclave). This module is a port of what `magika/magika.py` in that package does around the
//! model, checked against the package itself by the vectors in `models/sample/magika/testdata/`.
//!
//! Implemented, as in the Python package:
//! - `_extract_features_from_seekable` ("features extraction v2"): read at most `block_size` bytes from the
//!   beginning and from the end, strip leading (resp. trailing) whitespace — Python's `bytes.strip()` set, which
//!   includes `\x0b` and `\x0c` — keep the first `beg_size` (resp. last `end_size`) bytes and pad with
//!   `padding_token` at the end (resp. the beginning); the model row is `beg ++ end` ([`MagikaConfig::features`]).
//! - `_get_result_or_features_from_seekable`: an empty file is `empty`; a file shorter than
//!   `min_file_size_for_dl`, or one whose stripped beginning has fewer than `min_file_size_for_dl` bytes, is not
//!   given to the model and is `txt` if its first `min(size, block_size)` bytes are valid UTF-8, `unknown`
//!   otherwise ([`MagikaConfig::analyze`]).
//! - `_get_model_outputs_from_features` + `_get_output_label_from_dl_label_and_score`: argmax over the scores (the
//!   first maximum on ties), label from `target_labels_space`, then `overwrite_map` and the per-mode thresholds
//!   (`thresholds[label]` or `medium_confidence_threshold`), compared in double precision like Python; below the
//!   threshold the output falls back to `txt` or `unknown` by the predicted type's `is_text`
//!   ([`MagikaConfig::decode`]). Content-type metadata (MIME type, group, description, extensions) comes from the
//!   package's `content_types_kb.min.json`, with its defaults for missing fields.
//!
//! Not implemented: `mid_size > 0` and `use_inputs_at_offsets` (the Python package asserts them off too, and the
//! committed config has them off: [`MagikaConfig::from_json`] refuses such a config); paths, directories and
//! symlinks (`directory`, `symlink`, file-not-found and permission statuses: the caller reads the file); batching
//! across files (one file, one row; the model itself takes any batch); NaN scores (an error here, unspecified in
//! Python).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The Python package this module follows.
pub const MAGIKA_PYTHON_VERSION: &str = "1.0.3";
/// The model inside that package.
pub const MODEL_NAME: &str = "standard_v3_3";
/// The model's input name.
pub const INPUT_NAME: &str = "bytes";
/// The model's output name.
pub const OUTPUT_NAME: &str = "target_label";

/// The label of the model's "no model prediction" (`ContentTypeLabel.UNDEFINED`).
pub const UNDEFINED: &str = "undefined";
const EMPTY: &str = "empty";
const TXT: &str = "txt";
const UNKNOWN: &str = "unknown";

const EMBEDDED_CONFIG: &str = include_str!("../../models/sample/magika/config.min.json");
const EMBEDDED_CONTENT_TYPES: &str =
    include_str!("../../models/sample/magika/content_types_kb.min.json");

/// An error of the Magika client code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MagikaError {
    /// `config.min.json` does not parse.
    #[error("Magika model config is invalid")]
    Config(#[source] serde_json::Error),
    /// `content_types_kb.min.json` does not parse.
    #[error("Magika content types knowledge base is invalid")]
    ContentTypes(#[source] serde_json::Error),
    /// The config asks for something this port does not do (or is inconsistent).
    #[error("unsupported Magika model config: {reason}")]
    UnsupportedConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// A label used by the config is missing from the knowledge base.
    #[error("label `{label}` is not in the content types knowledge base")]
    UnknownLabel {
        /// The label.
        label: String,
    },
    /// The model output has the wrong number of scores.
    #[error("model output has {got} scores, expected a multiple of {expected}")]
    ScoreCount {
        /// The number of labels.
        expected: usize,
        /// The number of scores given.
        got: usize,
    },
    /// The model output contains NaN or an infinity.
    #[error("model output has a non-finite score at index {index}")]
    NonFiniteScore {
        /// Where.
        index: usize,
    },
}

/// The fields of `config.min.json` this port uses (the others — `protection`, `aes_key_hex`, `version_major` — are
/// ignored, as by the Python package).
#[derive(Debug, Deserialize)]
struct RawConfig {
    beg_size: usize,
    mid_size: usize,
    end_size: usize,
    use_inputs_at_offsets: bool,
    medium_confidence_threshold: f64,
    min_file_size_for_dl: usize,
    padding_token: i32,
    block_size: usize,
    target_labels_space: Vec<String>,
    thresholds: BTreeMap<String, f64>,
    overwrite_map: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct RawContentType {
    mime_type: Option<String>,
    group: Option<String>,
    description: Option<String>,
    extensions: Vec<String>,
    is_text: bool,
}

/// What the knowledge base says about a content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentTypeInfo {
    /// The label (`"python"`, `"png"`, …).
    pub label: String,
    /// MIME type (`text/plain` or `application/octet-stream` when the knowledge base has none).
    pub mime_type: String,
    /// Group (`"code"`, `"image"`, …; `"unknown"` when the knowledge base has none).
    pub group: String,
    /// Human-readable description (the label when the knowledge base has none).
    pub description: String,
    /// Usual file extensions.
    pub extensions: Vec<String>,
    /// Whether the type is text.
    pub is_text: bool,
}

/// How much confidence the final label requires (Python `PredictionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PredictionMode {
    /// Take the model's label whatever its score.
    BestGuess,
    /// Require `medium_confidence_threshold`.
    MediumConfidence,
    /// Require the label's own threshold, or `medium_confidence_threshold` (the package's default mode).
    #[default]
    HighConfidence,
}

/// Why the output label differs from the model's (Python `OverwriteReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverwriteReason {
    /// It does not.
    None,
    /// The score was below the mode's threshold.
    LowConfidence,
    /// The config's `overwrite_map` maps the model's label to another.
    OverwriteMap,
}

impl OverwriteReason {
    /// The Python enum member name (`"NONE"`, `"LOW_CONFIDENCE"`, `"OVERWRITE_MAP"`).
    pub fn python_name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::LowConfidence => "LOW_CONFIDENCE",
            Self::OverwriteMap => "OVERWRITE_MAP",
        }
    }
}

/// The result for one file (Python `MagikaPrediction`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The model's label (`undefined` when the model was not used).
    pub dl: ContentTypeInfo,
    /// The final label.
    pub output: ContentTypeInfo,
    /// The model's score for its label (1.0 when the model was not used).
    pub score: f32,
    /// Why `output` differs from `dl`.
    pub overwrite_reason: OverwriteReason,
}

impl Prediction {
    /// The final label.
    pub fn label(&self) -> &str {
        &self.output.label
    }
}

/// What to do with a file: nothing more (decided without the model) or run the model on these features.
#[derive(Debug, Clone, PartialEq)]
pub enum Analysis {
    /// Decided without the model (empty or too few meaningful bytes).
    Decided(Box<Prediction>),
    /// Run the model on this row (shape [`MagikaConfig::input_shape`]), then [`MagikaConfig::decode`] its output.
    NeedsModel(Vec<i32>),
}

/// The Magika model config and content-type knowledge base.
#[derive(Debug, Clone)]
pub struct MagikaConfig {
    beg_size: usize,
    end_size: usize,
    medium_confidence_threshold: f64,
    min_file_size_for_dl: usize,
    padding_token: i32,
    block_size: usize,
    target_labels: Vec<String>,
    thresholds: BTreeMap<String, f64>,
    overwrite_map: BTreeMap<String, String>,
    content_types: BTreeMap<String, ContentTypeInfo>,
    mode: PredictionMode,
}

impl MagikaConfig {
    /// The config and knowledge base committed under `models/sample/magika/`, embedded in the binary.
    pub fn embedded() -> Result<Self, MagikaError> {
        Self::from_json(EMBEDDED_CONFIG, EMBEDDED_CONTENT_TYPES)
    }

    /// Parses a `config.min.json` and a `content_types_kb.min.json`, in the default high-confidence mode.
    pub fn from_json(config_json: &str, content_types_json: &str) -> Result<Self, MagikaError> {
        let raw: RawConfig = serde_json::from_str(config_json).map_err(MagikaError::Config)?;
        let kb: BTreeMap<String, RawContentType> =
            serde_json::from_str(content_types_json).map_err(MagikaError::ContentTypes)?;
        // The Python package asserts the same (features extraction v2 has no mid part and no offsets).
        if raw.mid_size != 0 {
            return Err(MagikaError::UnsupportedConfig {
                reason: "mid_size must be 0",
            });
        }
        if raw.use_inputs_at_offsets {
            return Err(MagikaError::UnsupportedConfig {
                reason: "use_inputs_at_offsets must be false",
            });
        }
        if raw.beg_size >= raw.block_size || raw.end_size >= raw.block_size {
            return Err(MagikaError::UnsupportedConfig {
                reason: "beg_size and end_size must be smaller than block_size",
            });
        }
        // Python reads beg[min_file_size_for_dl - 1].
        if raw.min_file_size_for_dl == 0 || raw.min_file_size_for_dl > raw.beg_size {
            return Err(MagikaError::UnsupportedConfig {
                reason: "min_file_size_for_dl must be between 1 and beg_size",
            });
        }
        if raw.target_labels_space.is_empty() {
            return Err(MagikaError::UnsupportedConfig {
                reason: "target_labels_space is empty",
            });
        }
        let content_types: BTreeMap<String, ContentTypeInfo> = kb
            .into_iter()
            .map(|(label, ct)| {
                // Same defaults as Magika._load_content_types_kb.
                let default_mime = if ct.is_text {
                    "text/plain"
                } else {
                    "application/octet-stream"
                };
                let info = ContentTypeInfo {
                    mime_type: ct.mime_type.unwrap_or_else(|| default_mime.to_owned()),
                    group: ct.group.unwrap_or_else(|| "unknown".to_owned()),
                    description: ct.description.unwrap_or_else(|| label.clone()),
                    extensions: ct.extensions,
                    is_text: ct.is_text,
                    label: label.clone(),
                };
                (label, info)
            })
            .collect();
        let needed = raw
            .target_labels_space
            .iter()
            .chain(raw.overwrite_map.values())
            .map(String::as_str)
            .chain([UNDEFINED, EMPTY, TXT, UNKNOWN]);
        for label in needed {
            if !content_types.contains_key(label) {
                return Err(MagikaError::UnknownLabel {
                    label: label.to_owned(),
                });
            }
        }
        Ok(Self {
            beg_size: raw.beg_size,
            end_size: raw.end_size,
            medium_confidence_threshold: raw.medium_confidence_threshold,
            min_file_size_for_dl: raw.min_file_size_for_dl,
            padding_token: raw.padding_token,
            block_size: raw.block_size,
            target_labels: raw.target_labels_space,
            thresholds: raw.thresholds,
            overwrite_map: raw.overwrite_map,
            content_types,
            mode: PredictionMode::default(),
        })
    }

    /// The same config with another prediction mode.
    pub fn with_prediction_mode(mut self, mode: PredictionMode) -> Self {
        self.mode = mode;
        self
    }

    /// The prediction mode.
    pub fn prediction_mode(&self) -> PredictionMode {
        self.mode
    }

    /// The model input shape for one file: `[1, beg_size + end_size]` (`[1, 2048]` for `standard_v3_3`).
    pub fn input_shape(&self) -> [usize; 2] {
        [1, self.beg_size + self.end_size]
    }

    /// The model's labels, in output order.
    pub fn target_labels(&self) -> &[String] {
        &self.target_labels
    }

    /// What the knowledge base says about a label.
    pub fn content_type(&self, label: &str) -> Option<&ContentTypeInfo> {
        self.content_types.get(label)
    }

    /// The model input row for a file: `beg_size` ints from the stripped beginning, then `end_size` ints from the
    /// stripped end, bytes as `0..=255` and padding as `padding_token` (Python
    /// `Magika._extract_features_from_seekable`, assembled as in `Magika._get_raw_predictions`).
    pub fn features(&self, file_bytes: &[u8]) -> Vec<i32> {
        let n = file_bytes.len().min(self.block_size);
        let mut row = Vec::with_capacity(self.beg_size + self.end_size);

        // Beginning: at most block_size bytes, lstrip(), first beg_size, padded at the end.
        let beg = lstrip(&file_bytes[..n]);
        let beg = &beg[..beg.len().min(self.beg_size)];
        row.extend(beg.iter().map(|&b| i32::from(b)));
        row.resize(self.beg_size, self.padding_token);

        // End: at most block_size bytes, rstrip(), last end_size, padded at the beginning.
        let end = rstrip(&file_bytes[file_bytes.len() - n..]);
        let end = &end[end.len() - end.len().min(self.end_size)..];
        row.resize(
            self.beg_size + self.end_size - end.len(),
            self.padding_token,
        );
        row.extend(end.iter().map(|&b| i32::from(b)));
        row
    }

    /// Decides a file without the model where the Python package does, or returns its features
    /// (`Magika._get_result_or_features_from_seekable`).
    pub fn analyze(&self, file_bytes: &[u8]) -> Analysis {
        if file_bytes.is_empty() {
            return Analysis::Decided(Box::new(self.without_model(EMPTY)));
        }
        if file_bytes.len() < self.min_file_size_for_dl {
            return Analysis::Decided(Box::new(self.few_bytes_prediction(file_bytes)));
        }
        let features = self.features(file_bytes);
        if features[self.min_file_size_for_dl - 1] == self.padding_token {
            // Fewer than min_file_size_for_dl meaningful bytes once stripped.
            let n = file_bytes.len().min(self.block_size);
            return Analysis::Decided(Box::new(self.few_bytes_prediction(&file_bytes[..n])));
        }
        Analysis::NeedsModel(features)
    }

    /// Decodes the model's scores for one file (its `target_label` output row).
    pub fn decode(&self, scores: &[f32]) -> Result<Prediction, MagikaError> {
        if scores.len() != self.target_labels.len() {
            return Err(MagikaError::ScoreCount {
                expected: self.target_labels.len(),
                got: scores.len(),
            });
        }
        if let Some(index) = scores.iter().position(|s| !s.is_finite()) {
            return Err(MagikaError::NonFiniteScore { index });
        }
        // Python: max(range(len(preds)), key=preds.__getitem__): the first maximum.
        let mut best = 0;
        for (ix, score) in scores.iter().enumerate() {
            if *score > scores[best] {
                best = ix;
            }
        }
        let dl_label = &self.target_labels[best];
        let score = scores[best];
        let (output_label, overwrite_reason) = self.output_label(dl_label, score);
        Ok(Prediction {
            dl: self.info(dl_label),
            output: self.info(output_label),
            score,
            overwrite_reason,
        })
    }

    /// Decodes a batch output (`[N, labels]`, row-major) into one prediction per row.
    pub fn decode_batch(&self, scores: &[f32]) -> Result<Vec<Prediction>, MagikaError> {
        let width = self.target_labels.len();
        if !scores.len().is_multiple_of(width) {
            return Err(MagikaError::ScoreCount {
                expected: width,
                got: scores.len(),
            });
        }
        scores.chunks(width).map(|row| self.decode(row)).collect()
    }

    /// `Magika._get_output_label_from_dl_label_and_score`.
    fn output_label<'a>(&'a self, dl_label: &'a str, score: f32) -> (&'a str, OverwriteReason) {
        let mut reason = OverwriteReason::None;
        let mut output = self
            .overwrite_map
            .get(dl_label)
            .map_or(dl_label, String::as_str);
        if output != dl_label {
            reason = OverwriteReason::OverwriteMap;
        }
        // Python compares the float32 score, widened to a Python float, with the JSON thresholds (doubles).
        let score = f64::from(score);
        let confident = match self.mode {
            PredictionMode::BestGuess => true,
            PredictionMode::HighConfidence => {
                score
                    >= self
                        .thresholds
                        .get(dl_label)
                        .copied()
                        .unwrap_or(self.medium_confidence_threshold)
            }
            PredictionMode::MediumConfidence => score >= self.medium_confidence_threshold,
        };
        if !confident {
            reason = OverwriteReason::LowConfidence;
            output = if self.content_types.get(output).is_some_and(|ct| ct.is_text) {
                TXT
            } else {
                UNKNOWN
            };
            if dl_label == output {
                reason = OverwriteReason::None;
            }
        }
        (output, reason)
    }

    /// `Magika._get_label_from_few_bytes`: valid UTF-8 is `txt`, anything else `unknown`.
    fn few_bytes_prediction(&self, content: &[u8]) -> Prediction {
        self.without_model(if std::str::from_utf8(content).is_ok() {
            TXT
        } else {
            UNKNOWN
        })
    }

    fn without_model(&self, output: &str) -> Prediction {
        Prediction {
            dl: self.info(UNDEFINED),
            output: self.info(output),
            score: 1.0,
            overwrite_reason: OverwriteReason::None,
        }
    }

    /// Every label this is called with was checked against the knowledge base in `from_json`.
    fn info(&self, label: &str) -> ContentTypeInfo {
        self.content_types
            .get(label)
            .cloned()
            .unwrap_or_else(|| ContentTypeInfo {
                label: label.to_owned(),
                mime_type: "application/octet-stream".to_owned(),
                group: "unknown".to_owned(),
                description: label.to_owned(),
                extensions: vec![],
                is_text: false,
            })
    }
}

/// Python's `bytes.isspace()` set, used by `bytes.strip()`: space, `\t`, `\n`, `\r`, `\x0b`, `\x0c`.
/// (Not `u8::is_ascii_whitespace`, which leaves out `\x0b`.)
fn is_python_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn lstrip(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_python_whitespace(b))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn rstrip(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| !is_python_whitespace(b))
        .map_or(0, |ix| ix + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::PathBuf;

    use super::*;

    #[derive(Deserialize)]
    struct Vectors {
        magika_version: String,
        prediction_mode: String,
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        file: String,
        size: usize,
        path: String,
        scores: Option<Vec<f32>>,
        dl_label: String,
        output_label: String,
        score: f32,
        overwrite_reason: String,
        features: Vec<i32>,
    }

    fn testdata() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/sample/magika/testdata")
    }

    fn vectors() -> Vectors {
        let text = std::fs::read_to_string(testdata().join("vectors.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn file(name: &str) -> Vec<u8> {
        std::fs::read(testdata().join("files").join(name)).unwrap()
    }

    #[test]
    fn embedded_config_is_standard_v3_3() {
        let config = MagikaConfig::embedded().unwrap();
        assert_eq!(config.input_shape(), [1, 2048]);
        assert_eq!(config.target_labels().len(), 214);
        assert_eq!(config.prediction_mode(), PredictionMode::HighConfidence);
        let png = config.content_type("png").unwrap();
        assert_eq!(png.group, "image");
        assert_eq!(png.mime_type, "image/png");
    }

    #[test]
    fn features_match_python_magika() {
        let config = MagikaConfig::embedded().unwrap();
        let vectors = vectors();
        assert_eq!(vectors.magika_version, MAGIKA_PYTHON_VERSION);
        assert!(vectors.vectors.len() >= 10);
        for v in &vectors.vectors {
            let bytes = file(&v.file);
            assert_eq!(bytes.len(), v.size, "{}", v.file);
            let features = config.features(&bytes);
            assert_eq!(features.len(), 2048, "{}", v.file);
            if let Some(ix) = (0..2048).find(|&ix| features[ix] != v.features[ix]) {
                panic!(
                    "{}: feature {ix} is {}, Python says {}",
                    v.file, features[ix], v.features[ix]
                );
            }
        }
    }

    #[test]
    fn analysis_and_decoding_match_python_magika() {
        let config = MagikaConfig::embedded().unwrap();
        let vectors = vectors();
        assert_eq!(vectors.prediction_mode, "high-confidence");
        for v in &vectors.vectors {
            let prediction = match (config.analyze(&file(&v.file)), v.path.as_str()) {
                (Analysis::Decided(p), "empty" | "few_bytes") => *p,
                (Analysis::NeedsModel(features), "model") => {
                    assert_eq!(features, v.features, "{}", v.file);
                    config.decode(v.scores.as_deref().unwrap()).unwrap()
                }
                (other, path) => panic!(
                    "{}: Python took the {path} path, Rust says {other:?}",
                    v.file
                ),
            };
            assert_eq!(prediction.dl.label, v.dl_label, "{}", v.file);
            assert_eq!(prediction.label(), v.output_label, "{}", v.file);
            assert_eq!(prediction.score, v.score, "{}", v.file);
            assert_eq!(
                prediction.overwrite_reason.python_name(),
                v.overwrite_reason,
                "{}",
                v.file
            );
        }
    }

    #[test]
    fn vectors_cover_every_branch() {
        let v = vectors().vectors;
        let has = |f: &dyn Fn(&Vector) -> bool| v.iter().any(f);
        assert!(has(&|v| v.path == "empty"));
        assert!(has(&|v| v.path == "few_bytes" && v.output_label == "txt"));
        assert!(has(&|v| v.path == "few_bytes"
            && v.output_label == "unknown"
            && v.size >= 8));
        assert!(has(&|v| v.path == "model"
            && v.overwrite_reason == "NONE"
            && v.dl_label == v.output_label));
        assert!(has(&|v| v.overwrite_reason == "OVERWRITE_MAP"));
        assert!(has(&|v| v.overwrite_reason == "LOW_CONFIDENCE"));
        assert!(has(&|v| v.size > 4096 && v.path == "model"));
    }

    #[test]
    fn prediction_modes() {
        let scores = |label: &str, score: f32| {
            let config = MagikaConfig::embedded().unwrap();
            let mut s = vec![0.0f32; 214];
            let ix = config
                .target_labels()
                .iter()
                .position(|l| l == label)
                .unwrap();
            s[ix] = score;
            s
        };
        let high = MagikaConfig::embedded().unwrap();
        let medium = high
            .clone()
            .with_prediction_mode(PredictionMode::MediumConfidence);
        let best = high.clone().with_prediction_mode(PredictionMode::BestGuess);
        // markdown's own threshold is 0.75; the medium one is 0.5.
        let md = scores("markdown", 0.6);
        assert_eq!(high.decode(&md).unwrap().label(), "txt");
        assert_eq!(
            high.decode(&md).unwrap().overwrite_reason,
            OverwriteReason::LowConfidence
        );
        assert_eq!(medium.decode(&md).unwrap().label(), "markdown");
        assert_eq!(
            best.decode(&scores("markdown", 0.1)).unwrap().label(),
            "markdown"
        );
        // Binary type below threshold -> unknown.
        assert_eq!(high.decode(&scores("png", 0.3)).unwrap().label(), "unknown");
        // Thresholds compare in double precision: 0.9f32 is 0.89999997..., below crt's 0.9.
        assert_eq!(high.decode(&scores("crt", 0.9)).unwrap().label(), "unknown");
        // overwrite_map, confident.
        let p = high.decode(&scores("randomtxt", 0.99)).unwrap();
        assert_eq!((p.dl.label.as_str(), p.label()), ("randomtxt", "txt"));
        assert_eq!(p.overwrite_reason, OverwriteReason::OverwriteMap);
    }

    #[test]
    fn decode_ties_take_the_first_and_errors_are_named() {
        let config = MagikaConfig::embedded().unwrap();
        let mut s = vec![0.25f32; 214];
        s[10] = 0.5;
        s[20] = 0.5;
        assert_eq!(
            config.decode(&s).unwrap().dl.label,
            config.target_labels()[10]
        );
        assert!(matches!(
            config.decode(&s[..213]),
            Err(MagikaError::ScoreCount { got: 213, .. })
        ));
        s[3] = f32::NAN;
        assert!(matches!(
            config.decode(&s),
            Err(MagikaError::NonFiniteScore { index: 3 })
        ));
        let batch: Vec<f32> = [vec![0.0; 214], vec![1.0; 214]].concat();
        assert_eq!(config.decode_batch(&batch).unwrap().len(), 2);
        assert!(config.decode_batch(&batch[..300]).is_err());
    }

    #[test]
    fn python_whitespace_set() {
        let config = MagikaConfig::embedded().unwrap();
        let f = config.features(b"\x0b\x0c \t\r\nab\x0b\x0c \t\r\n\x00");
        assert_eq!(&f[..3], &[i32::from(b'a'), i32::from(b'b'), 0x0b]);
        assert_eq!(f[2047], 0); // NUL is not whitespace
        let f = config.features(b"\x1cab\x1c"); // str.isspace() would strip \x1c, bytes.strip() does not
        assert_eq!(f[0], 0x1c);
        assert!(f[4..1024].iter().all(|&t| t == 256));
    }

    #[test]
    fn unsupported_configs_are_refused() {
        let kb = EMBEDDED_CONTENT_TYPES;
        let with = |from: &str, to: &str| EMBEDDED_CONFIG.replacen(from, to, 1);
        for bad in [
            with("\"mid_size\":0", "\"mid_size\":8"),
            with(
                "\"use_inputs_at_offsets\":false",
                "\"use_inputs_at_offsets\":true",
            ),
            with("\"min_file_size_for_dl\":8", "\"min_file_size_for_dl\":0"),
            with("\"beg_size\":1024", "\"beg_size\":4096"),
        ] {
            assert!(matches!(
                MagikaConfig::from_json(&bad, kb),
                Err(MagikaError::UnsupportedConfig { .. })
            ));
        }
        assert!(matches!(
            MagikaConfig::from_json(&with("\"3gp\"", "\"no-such-type\""), kb),
            Err(MagikaError::UnknownLabel { .. })
        ));
        assert!(matches!(
            MagikaConfig::from_json("{}", kb),
            Err(MagikaError::Config(_))
        ));
    }
}
