//! Where every key and value of a YAML file is: the map from key paths
//! (`policy.mask[1].detect[0]`) to line and column that diagnostics use.
//!
//! serde_yaml_ng is the parser of record for values, but it throws positions
//! away once a `Value` is built. So the same text is also run through
//! `saphyr-parser`'s event stream, which carries a span on every event, and the
//! positions are kept by key path. If the two parsers ever disagree about a
//! document, the worst outcome is a diagnostic without a precise location.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};

use super::diagnostic::At;

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index (0-based).
    Index(usize),
}

/// The path of a node from the document root: `policy.mask[1].detect[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The document root.
    pub fn root() -> Self {
        Self::default()
    }

    /// The child under mapping key `key`.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    /// The child at sequence index `index`.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// The parent path (the root is its own parent).
    #[must_use]
    pub fn parent(&self) -> Self {
        let mut path = self.clone();
        path.0.pop();
        path
    }

    /// Whether this is the root.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The steps of the path.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Where one node is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Position of the mapping key, for nodes that are mapping values.
    key: Option<Location>,
    /// Position of the node itself.
    value: Location,
}

/// The positions of every key and value of one YAML document.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    file: PathBuf,
    entries: HashMap<KeyPath, Entry>,
}

impl SourceMap {
    /// Maps the first document of `text`; `file` only names the file in diagnostics.
    pub fn new(file: &Path, text: &str) -> Self {
        let mut builder = Builder::default();
        // A scan error here means serde_yaml_ng reports the syntax error; whatever
        // was mapped before the error still locates earlier keys.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        Self {
            file: file.to_owned(),
            entries: builder.entries,
        }
    }

    /// A map that locates nothing (for values built in code).
    pub fn empty(file: &Path) -> Self {
        Self {
            file: file.to_owned(),
            entries: HashMap::new(),
        }
    }

    /// The file this map describes.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The position of `path`'s key or value; for a path that is not in the
    /// file (a missing key), the position of its nearest ancestor.
    pub fn locate(&self, path: &KeyPath, at: At) -> Option<Location> {
        let mut path = path.clone();
        let mut exact = true;
        loop {
            if let Some(entry) = self.entries.get(&path) {
                return Some(match at {
                    At::Key if exact => entry.key.unwrap_or(entry.value),
                    _ => entry.value,
                });
            }
            if path.is_empty() {
                return None;
            }
            path = path.parent();
            exact = false;
        }
    }
}

enum Frame {
    Mapping {
        path: KeyPath,
        pending_key: Option<(String, Location)>,
    },
    Sequence {
        path: KeyPath,
        next: usize,
    },
    /// Inside a complex (non-scalar) mapping key: nothing in here has a path.
    Ignored {
        depth: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    entries: HashMap<KeyPath, Entry>,
    documents: usize,
}

impl Builder {
    /// One node starts: a scalar or alias (`container` `None`), or a mapping
    /// (`Some(false)`) or sequence (`Some(true)`).
    fn node(&mut self, location: Location, scalar: Option<&str>, container: Option<bool>) {
        let path = match self.stack.last_mut() {
            None => {
                if self.documents > 1 {
                    return;
                }
                Some((KeyPath::root(), None))
            }
            Some(Frame::Ignored { depth }) => {
                if container.is_some() {
                    *depth += 1;
                }
                return;
            }
            Some(Frame::Sequence { path, next }) => {
                let child = path.index(*next);
                *next += 1;
                Some((child, None))
            }
            Some(Frame::Mapping { path, pending_key }) => {
                if let Some((key, key_location)) = pending_key.take() {
                    Some((path.key(&key), Some(key_location)))
                } else {
                    // This node is a key.
                    *pending_key = Some((scalar.unwrap_or("?").to_owned(), location));
                    if container.is_some() {
                        self.stack.push(Frame::Ignored { depth: 0 });
                    }
                    None
                }
            }
        };
        let Some((path, key)) = path else { return };
        self.entries.entry(path.clone()).or_insert(Entry {
            key,
            value: location,
        });
        match container {
            Some(true) => self.stack.push(Frame::Sequence { path, next: 0 }),
            Some(false) => self.stack.push(Frame::Mapping {
                path,
                pending_key: None,
            }),
            None => {}
        }
    }
}

fn location(span: Span) -> Location {
    Location {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

impl<'input> SpannedEventReceiver<'input> for Builder {
    fn on_event(&mut self, event: Event<'input>, span: Span) {
        let at = location(span);
        match event {
            Event::DocumentStart(_) => self.documents += 1,
            Event::Scalar(value, ..) => self.node(at, Some(&value), None),
            Event::Alias(_) => self.node(at, None, None),
            Event::MappingStart(..) => self.node(at, None, Some(false)),
            Event::SequenceStart(..) => self.node(at, None, Some(true)),
            Event::MappingEnd | Event::SequenceEnd => match self.stack.last_mut() {
                Some(Frame::Ignored { depth }) if *depth > 0 => *depth -= 1,
                _ => {
                    self.stack.pop();
                }
            },
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(map: &SourceMap, path: &str) -> (usize, usize) {
        let mut key_path = KeyPath::root();
        for part in path.split('.') {
            if let Some((key, rest)) = part.split_once('[') {
                key_path = key_path.key(key);
                for index in rest.trim_end_matches(']').split("][") {
                    key_path = key_path.index(index.parse().unwrap());
                }
            } else {
                key_path = key_path.key(part);
            }
        }
        let l = map.locate(&key_path, At::Key).unwrap();
        (l.line, l.column)
    }

    #[test]
    fn locates_keys_in_block_and_flow_style() {
        let text = "a: 1\npolicy:\n  mask:\n    - columns: [x, y]\n      strategy: redact\n    - {detect: [email], strategy: hash}\n";
        let map = SourceMap::new(Path::new("f.yaml"), text);
        assert_eq!(at(&map, "a"), (1, 1));
        assert_eq!(at(&map, "policy.mask"), (3, 3));
        assert_eq!(at(&map, "policy.mask[0].strategy"), (5, 7));
        assert_eq!(at(&map, "policy.mask[0].columns[1]"), (4, 20));
        assert_eq!(at(&map, "policy.mask[1].strategy"), (6, 25));
        assert_eq!(at(&map, "policy.mask[1].detect[0]"), (6, 17));
        // A missing key points at its parent.
        assert_eq!(at(&map, "policy.mask[1].nope"), (6, 7));
        assert_eq!(
            KeyPath::root()
                .key("policy")
                .key("mask")
                .index(1)
                .key("detect")
                .index(0)
                .to_string(),
            "policy.mask[1].detect[0]"
        );
    }

    #[test]
    fn complex_keys_do_not_derail_paths() {
        let text = "? [a, b]\n: 1\nafter: 2\n";
        let map = SourceMap::new(Path::new("f.yaml"), text);
        assert_eq!(at(&map, "after"), (3, 1));
    }
}
