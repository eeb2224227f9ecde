//! Reading manifests: files, directories and stdin; multi-document YAML, JSON, `List`s.
//!
//! YAML streams are split into documents here (a `---` line starts one), and each document
//! is parsed on its own: with its own budget, with serde-saphyr's source snippets off (they
//! print neighbouring lines, passwords included), and with its line offset added back so
//! that every error names file, document, line and column.

use std::path::{Path, PathBuf};

use policy::Object;

/// Inputs larger than this are refused rather than read.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// One input: a file, or stdin (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Stdin,
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Stdin => "-".to_string(),
        }
    }
}

/// An input that could not be used, or a part of one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InputError {
    pub source: String,
    /// 1-based; `None` when the whole input failed (unreadable file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// 1-based, within the item list of a `List` document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(d) = self.document {
            write!(f, ": document {d}")?;
        }
        if let Some(i) = self.item {
            write!(f, ", item {i}")?;
        }
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " (line {l}, column {c})")?,
            (Some(l), None) => write!(f, " (line {l})")?,
            _ => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// One parsed document (or `List` item) of an input.
#[derive(Debug)]
pub struct Document {
    pub source: String,
    pub document: usize,
    pub item: Option<usize>,
    pub object: Object,
    /// Where things are in the source (only when asked: [`locate`]).
    pub spans: Option<crate::locate::Spans>,
}

/// Expands paths: files as given, directories recursively (`.yaml`, `.yml`, `.json`, in
/// name order), `-` as stdin. A path that does not exist is an error for that path.
pub fn collect(paths: &[PathBuf]) -> (Vec<Source>, Vec<InputError>) {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            sources.push(Source::Stdin);
            continue;
        }
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut sources, &mut errors),
            Ok(_) => sources.push(Source::File(p.clone())),
            Err(e) => errors.push(whole_input_error(&p.display().to_string(), &e.to_string())),
        }
    }
    (sources, errors)
}

fn walk(dir: &Path, sources: &mut Vec<Source>, errors: &mut Vec<InputError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(whole_input_error(
                &dir.display().to_string(),
                &e.to_string(),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, sources, errors);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            sources.push(Source::File(p));
        }
    }
}

fn whole_input_error(source: &str, message: &str) -> InputError {
    InputError {
        source: source.to_string(),
        document: None,
        item: None,
        line: None,
        column: None,
        message: message.to_string(),
    }
}

/// Reads an input whole (bounded by [`MAX_INPUT_BYTES`]).
pub fn read(source: &Source) -> Result<String, InputError> {
    use std::io::Read;
    let name = source.name();
    let mut bytes = Vec::new();
    let result = match source {
        Source::Stdin => std::io::stdin()
            .lock()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes),
        Source::File(p) => {
            std::fs::File::open(p).and_then(|f| f.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes))
        }
    };
    result.map_err(|e| whole_input_error(&name, &e.to_string()))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(whole_input_error(
            &name,
            &format!("larger than {} MiB", MAX_INPUT_BYTES / 1024 / 1024),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        whole_input_error(
            &name,
            &format!(
                "not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Whether text is JSON rather than YAML: by extension, else by its first character.
pub fn is_json(source: &Source, text: &str) -> bool {
    match source {
        Source::File(p) if p.extension().is_some_and(|e| e == "json") => true,
        Source::File(p) if p.extension().is_some_and(|e| e == "yaml" || e == "yml") => false,
        _ => text.trim_start().starts_with('{'),
    }
}

/// A document of a YAML stream: its 1-based number, the 0-based line it starts on, its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDocument<'t> {
    pub number: usize,
    pub first_line: usize,
    pub text: &'t str,
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// Splits a YAML stream into documents. A `---` line starts a document (anything after the
/// marker on that line belongs to it); `...` ends one. The part before the first `---`
/// counts only when it has content. Documents with no content keep their number but are
/// not returned.
pub fn split_yaml(text: &str) -> Vec<RawDocument<'_>> {
    let mut docs = Vec::new();
    let mut number = 0;
    let mut start: Option<(usize, usize)> = Some((0, 0)); // (byte, line) of the current doc
    let mut leading = true;
    let mut offset = 0;
    let mut segments: Vec<(bool, usize, usize, usize)> = Vec::new(); // (after_marker, byte start, byte end, line)
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_marker(bare, "---") {
            if let Some((s, l)) = start.take() {
                segments.push((!leading, s, offset, l));
            }
            leading = false;
            // The rest of the marker line opens the new document.
            start = Some((offset + 3, line_no));
        } else if is_marker(bare, "...")
            && let Some((s, l)) = start.take()
        {
            segments.push((!leading, s, offset, l));
        }
        offset += line.len();
    }
    if let Some((s, l)) = start {
        segments.push((!leading, s, text.len(), l));
    }
    for (after_marker, s, e, l) in segments {
        let body = &text[s..e];
        let has_content = body.lines().any(|line| {
            let t = line.trim();
            // A `%` directive can only precede the first `---`.
            !t.is_empty() && !t.starts_with('#') && (after_marker || !line.starts_with('%'))
        });
        if after_marker || has_content {
            number += 1;
        }
        if has_content {
            docs.push(RawDocument {
                number,
                first_line: l,
                text: body,
            });
        }
    }
    docs
}

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1;
    budget.max_depth = 256;
    budget.max_nodes = 2_000_000;
    budget.max_total_scalar_bytes = 32 * 1024 * 1024;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o.with_snippet = false;
    o.crop_radius = 0;
    // As the API server sees YAML: an unquoted 5432 or true is a number or a boolean,
    // and a number where a string belongs is an error.
    o.no_schema = true;
    // kubectl reads YAML 1.1: `defaultMode: 0644` is octal.
    o.legacy_octal_numbers = true;
    o
}

/// Parses one YAML document into an object. Two things are paid only where needed, since
/// each would slow every document: field-path tracking (a document that fails is parsed
/// again with it, to name the field), and `LastWins` for duplicate keys (kubectl keeps the
/// last and only warns; serde-saphyr's `LastWins` doubles the parse time).
fn parse_yaml_document(
    text: &str,
    options: &serde_saphyr::Options,
) -> Result<Object, Box<(serde_saphyr::Error, String)>> {
    let is_duplicate = |e: &serde_saphyr::Error| {
        matches!(
            e.without_snippet(),
            serde_saphyr::Error::DuplicateMappingKey { .. }
        )
    };
    let mut options = options.clone();
    let first = serde_saphyr::from_str_with_options::<Object>(text, options.clone());
    match first {
        Ok(object) => return Ok(object),
        Err(e) if is_duplicate(&e) => {
            options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
        }
        Err(_) => {}
    }
    let mut track = serde_path_to_error::Track::new();
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        <Object as serde::Deserialize>::deserialize(serde_path_to_error::Deserializer::new(
            de, &mut track,
        ))
    })
    .map_err(|e| {
        let message = with_path(track, &plain_yaml_message(&e));
        Box::new((e, message))
    })
}

/// Parses one input into documents and errors.
pub fn parse(source: &Source, text: &str) -> (Vec<Document>, Vec<InputError>) {
    let name = source.name();
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    if is_json(source, text) {
        // As for YAML: the field path is tracked only when a first parse fails.
        let result = serde_json::from_str::<Object>(text).or_else(|_| {
            let mut track = serde_path_to_error::Track::new();
            let mut de = serde_json::Deserializer::from_str(text);
            <Object as serde::Deserialize>::deserialize(serde_path_to_error::Deserializer::new(
                &mut de, &mut track,
            ))
            .and_then(|o| de.end().map(|()| o))
            .map_err(|e| (e, track))
        });
        match result {
            Ok(o) => add_object(&name, 1, o, &mut docs, &mut errors),
            Err((e, track)) => errors.push(InputError {
                source: name.clone(),
                document: Some(1),
                item: None,
                line: Some(e.line() as u64),
                column: Some(e.column() as u64),
                message: with_path(track, &policy::message::parser_error(&e.to_string())),
            }),
        }
        return (docs, errors);
    }
    let options = yaml_options();
    for raw in split_yaml(text) {
        match parse_yaml_document(raw.text, &options) {
            Ok(o) => add_object(&name, raw.number, o, &mut docs, &mut errors),
            Err(failure) => {
                let (e, message) = *failure;
                let location = e.location();
                errors.push(InputError {
                    source: name.clone(),
                    document: Some(raw.number),
                    item: None,
                    line: location.map(|l| l.line() + raw.first_line as u64),
                    column: location.map(|l| l.column()),
                    message,
                })
            }
        }
    }
    (docs, errors)
}

/// Adds to `docs` (parsed from `text`) where their containers, variables and annotations
/// are in `text`.
pub fn locate(source: &Source, text: &str, docs: &mut [Document]) {
    let documents: Vec<(usize, usize, &str)> = if is_json(source, text) {
        vec![(1, 0, text)]
    } else {
        (split_yaml(text).into_iter())
            .map(|r| (r.number, r.first_line, r.text))
            .collect()
    };
    for (number, first_line, text) in documents {
        let spans = crate::locate::document(text, first_line, yaml_options());
        for d in docs.iter_mut().filter(|d| d.document == number) {
            let item = spans.get(d.item.map_or(0, |i| i - 1));
            // A List that did not fit the model: each item gets the document's first line.
            d.spans = item.or(spans.first().filter(|_| spans.len() == 1)).cloned();
        }
    }
}

/// The parser's message without its own location suffix (we add ours), and without the
/// offending scalar: it says what type was found, never the value.
fn plain_yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.render_with_formatter(&ValueFree);
    policy::message::parser_error(text.lines().next().unwrap_or_default())
}

/// serde-saphyr's user-facing messages, except for the ones that quote a scalar.
struct ValueFree;

impl serde_saphyr::MessageFormatter for ValueFree {
    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> std::borrow::Cow<'a, str> {
        match err {
            serde_saphyr::Error::QuotingRequired { value, .. } => format!(
                "an unquoted {} where a string is expected: quote it",
                scalar_type(value)
            )
            .into(),
            serde_saphyr::Error::NonFiniteFloat { .. } => "a number that is not finite".into(),
            other => serde_saphyr::UserMessageFormatter.format_message(other),
        }
    }
}

/// What YAML reads an unquoted scalar as, named without the scalar.
fn scalar_type(value: &str) -> &'static str {
    let v = value.trim_start_matches(['+', '-']);
    if matches!(
        value,
        "true" | "false" | "True" | "False" | "TRUE" | "FALSE"
    ) {
        "boolean"
    } else if matches!(value, "null" | "Null" | "NULL" | "~") {
        "null"
    } else if v.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        "number"
    } else {
        "scalar"
    }
}

fn with_path(track: serde_path_to_error::Track, message: &str) -> String {
    let path = track.path().to_string();
    if path.is_empty() || path == "." || message.starts_with(&path) {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

fn add_object(
    name: &str,
    document: usize,
    object: Object,
    docs: &mut Vec<Document>,
    errors: &mut Vec<InputError>,
) {
    let mut push = |item: Option<usize>, object: Object| {
        docs.push(Document {
            source: name.to_string(),
            document,
            item,
            object,
            spans: None,
        });
    };
    match object {
        Object::List(items) => {
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Ok(object) => push(Some(i + 1), object),
                    Err(message) => errors.push(InputError {
                        source: name.to_string(),
                        document: Some(document),
                        item: Some(i + 1),
                        line: None,
                        column: None,
                        message: policy::message::without_quoted_values(&message),
                    }),
                }
            }
        }
        object => push(None, object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(text: &str) -> Vec<(usize, usize)> {
        split_yaml(text)
            .iter()
            .map(|d| (d.number, d.first_line))
            .collect()
    }

    #[test]
    fn splitting() {
        assert_eq!(numbers("a: 1\n"), [(1, 0)]);
        assert_eq!(numbers("---\na: 1\n---\nb: 2\n"), [(1, 0), (2, 2)]);
        assert_eq!(numbers("# c\n---\n# only a comment\n---\nb: 2\n"), [(2, 3)]);
        assert_eq!(numbers("a: 1\n---\n---\nb: 2"), [(1, 0), (3, 2)]);
        assert_eq!(numbers("%YAML 1.2\n---\na: 1\n...\n"), [(1, 1)]);
        assert_eq!(numbers("--- |\n  text\n"), [(1, 0)]);
        assert_eq!(numbers("a: |\n  ---not a marker\n"), [(1, 0)]);
        assert!(numbers("").is_empty());
    }

    #[test]
    fn duplicate_keys_keep_the_last_as_kubectl_does() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  PGSSLMODE: disable\n  PGSSLMODE: verify-full\n";
        let (docs, errors) = parse(&Source::Stdin, text);
        assert!(errors.is_empty(), "{errors:?}");
        let Object::ConfigMap { data, .. } = &docs[0].object else {
            panic!("a ConfigMap")
        };
        assert_eq!(data["PGSSLMODE"], "verify-full");
    }

    #[test]
    fn errors_name_document_line_and_path() {
        let text = "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: c\n    env:\n    - name: PORT\n      value: 5432\n";
        let (docs, errors) = parse(&Source::Stdin, text);
        assert_eq!(docs.len(), 1);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!(e.document, Some(2));
        assert_eq!(e.line, Some(11));
        assert!(
            e.message.starts_with("spec.containers[0].env[0].value:"),
            "{}",
            e.message
        );
    }
}
