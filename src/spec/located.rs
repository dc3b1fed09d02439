//! A sync file as a tree of values that remember where they were written:
//! YAML (through serde-saphyr's `Spanned`) and TOML (through toml's
//! `Spanned`) both become the same [`Node`] tree, so every later check can
//! point at a byte range of the file, whatever its format.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// One value of the file and the bytes it was written in.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Range<usize>,
    pub value: Value,
}

/// The kinds of values a sync file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order: (key, value).
    Map(Vec<(Node, Node)>),
}

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Key(k) => write!(f, ".{k}"),
            Step::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Formats a path the way a user would write it: `sync[1].tags.semver`.
pub fn path_text(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        s.push_str(&step.to_string());
    }
    s.trim_start_matches('.').to_string()
}

impl Node {
    /// The value as a string key (map keys are strings in both formats).
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value at `key` of a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The (key, value) pair at `key` of a map node.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The node a path leads to, or the deepest node on the way.
    pub fn at(&self, path: &[Step]) -> &Node {
        let mut node = self;
        for step in path {
            let next = match (step, &node.value) {
                (Step::Key(k), Value::Map(_)) => node.get(k),
                (Step::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// The span of the key that introduces the node at `path` (or of the
    /// node itself when it is not a map entry).
    pub fn key_span(&self, path: &[Step]) -> Range<usize> {
        if let Some((Step::Key(k), parent)) = path.split_last() {
            if let Some((key, _)) = self.at(parent).entry(k) {
                return key.span.clone();
            }
        }
        self.at(path).span.clone()
    }

    /// The same tree as plain JSON, for deserialising the model.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (key_text(k), v.to_json())).collect()),
        }
    }
}

/// A map key as text (YAML allows non-string keys; they are spelled out).
fn key_text(k: &Node) -> String {
    match &k.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        _ => "?".to_string(),
    }
}

/// How one format wraps a value with its location.
trait Spanning {
    fn node<'de, D: Deserializer<'de>>(d: D) -> Result<Node, D::Error>;
}

/// YAML: serde-saphyr's `Spanned` (character offsets turned into bytes).
struct Yaml;
/// TOML: toml's `Spanned` (byte ranges).
struct Toml;

impl Spanning for Yaml {
    fn node<'de, D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        let s = serde_saphyr::Spanned::<Inner<Yaml>>::deserialize(d)?;
        let span = s.referenced.span();
        let start = span.byte_offset().unwrap_or(span.offset()) as usize;
        let len = span.byte_len().unwrap_or(span.len()) as usize;
        Ok(Node {
            span: start..start + len,
            value: s.value.0,
        })
    }
}

impl Spanning for Toml {
    fn node<'de, D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        let s = toml::Spanned::<Inner<Toml>>::deserialize(d)?;
        Ok(Node {
            span: s.span(),
            value: s.into_inner().0,
        })
    }
}

struct Inner<W>(Value, PhantomData<W>);

impl<'de, W: Spanning> Deserialize<'de> for Inner<W> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor::<W>(PhantomData))
            .map(|v| Inner(v, PhantomData))
    }
}

struct NodeSeed<W>(PhantomData<W>);

impl<'de, W: Spanning> DeserializeSeed<'de> for NodeSeed<W> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        W::node(d)
    }
}

struct ValueVisitor<W>(PhantomData<W>);

impl<'de, W: Spanning> Visitor<'de> for ValueVisitor<W> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("the number {v} is too large")))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("the number {v} is too large")))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("the number {v} is too large")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Inner::<W>::deserialize(d).map(|i| i.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element_seed(NodeSeed::<W>(PhantomData))? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key_seed(NodeSeed::<W>(PhantomData))? {
            let v = map.next_value_seed(NodeSeed::<W>(PhantomData))?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

/// Why a file could not be read as YAML or TOML at all.
#[derive(Debug)]
pub struct SyntaxError {
    pub message: String,
    pub span: Option<Range<usize>>,
}

/// Parses YAML text into a located tree.
pub fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    match serde_saphyr::from_str::<Inner<Yaml>>(text) {
        Ok(Inner(value, _)) => Ok(Node {
            span: 0..text.len(),
            value,
        }),
        Err(e) => {
            let span = e.location().map(|l| {
                let s = l.span();
                let start = s.byte_offset().unwrap_or(s.offset()) as usize;
                start..start + (s.byte_len().unwrap_or(s.len()) as usize).max(1)
            });
            // serde-saphyr draws its own snippet; keep its first line, without
            // the "error: line L column C:" the caret says better.
            let full = e.to_string();
            let first = full.lines().next().unwrap_or_default().trim();
            let first = first.strip_prefix("error:").unwrap_or(first).trim();
            let message = match first.split_once(": ") {
                Some((place, rest)) if place.starts_with("line ") => rest.to_string(),
                _ => first.to_string(),
            };
            let message = match message.find(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            Err(SyntaxError { message, span })
        }
    }
}

/// Parses TOML text into a located tree.
pub fn parse_toml(text: &str) -> Result<Node, SyntaxError> {
    match toml::from_str::<Inner<Toml>>(text) {
        Ok(Inner(value, _)) => Ok(Node {
            span: 0..text.len(),
            value,
        }),
        Err(e) => Err(SyntaxError {
            message: e.message().trim().to_string(),
            span: e.span(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_at<'a>(src: &'a str, n: &Node) -> &'a str {
        &src[n.span.clone()]
    }

    #[test]
    fn yaml_values_and_keys_carry_their_bytes() {
        let src = "version: 1\nsync:\n  - from: registry://a/b\n    to: [oci:///x, \"tar:///y.tar\"]\n";
        let root = parse_yaml(src).unwrap();
        let from = root.at(&[Step::Key("sync".into()), Step::Index(0), Step::Key("from".into())]);
        assert_eq!(text_at(src, from), "registry://a/b");
        let key = root.key_span(&[Step::Key("sync".into()), Step::Index(0), Step::Key("to".into())]);
        assert_eq!(&src[key], "to");
        let second = root.at(&[
            Step::Key("sync".into()),
            Step::Index(0),
            Step::Key("to".into()),
            Step::Index(1),
        ]);
        assert!(text_at(src, second).contains("tar:///y.tar"));
        assert_eq!(root.get("version").map(|n| n.value.clone()), Some(Value::Int(1)));
    }

    #[test]
    fn toml_values_and_keys_carry_their_bytes() {
        let src = "version = 1\n[[sync]]\nfrom = \"registry://a/b\"\nto = [\"oci:///x\"]\n";
        let root = parse_toml(src).unwrap();
        let from = root.at(&[Step::Key("sync".into()), Step::Index(0), Step::Key("from".into())]);
        assert_eq!(text_at(src, from), "\"registry://a/b\"");
        let key = root.key_span(&[Step::Key("sync".into()), Step::Index(0), Step::Key("to".into())]);
        assert_eq!(&src[key], "to");
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let e = parse_yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.span.is_some(), "{e:?}");
        let e = parse_toml("a = \n").unwrap_err();
        assert!(e.span.is_some(), "{e:?}");
    }

    #[test]
    fn json_view_keeps_order_and_types() {
        let root = parse_yaml("b: 1\na: [true, x, 2.5]\n").unwrap();
        assert_eq!(root.to_json().to_string(), r#"{"b":1,"a":[true,"x",2.5]}"#);
    }
}
