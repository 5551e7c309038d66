//! An event's named fields (`errno`, `client`, `request`, a rule's captures): a small map from
//! name to value, sorted by name, held in one text buffer.
//!
//! A scan builds thousands of events of a dozen fields each. As a `BTreeMap<String, String>`
//! each field was two allocations and the tree a few nodes of half a kilobyte: most of an
//! error-log scan's allocations and page faults. Here every name and value sits in one
//! `String`, with one small index beside it: two allocations per event, a quarter of the
//! memory. It reads, iterates and serializes as the map did (a JSON object in name order).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Named fields, sorted by name (byte order, as a `BTreeMap<String, _>`); a name appears once.
#[derive(Clone, Default)]
pub struct FieldMap {
    /// Every name and value, back to back (a replaced value's old bytes stay, unused).
    text: String,
    /// The fields, in name order.
    spans: Vec<Span>,
}

/// One field: where its name starts, where it ends (and its value starts), and where its value
/// ends, in `text`; and its name's [`head`], which orders most names without reading them.
#[derive(Clone, Copy)]
struct Span {
    head: u64,
    name: usize,
    value: usize,
    end: usize,
}

/// A name's first eight bytes as a big-endian number, zero-padded. Two names' heads order them
/// as their bytes do, except that equal heads leave a tie: then names of at most eight bytes
/// order by length (one is the other plus zero bytes), longer ones by their bytes. Field names
/// are short (`client`, `errno`, `upstream`): most lookups compare a number or two.
fn head(name: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = name.len().min(8);
    w[..n].copy_from_slice(&name[..n]);
    u64::from_be_bytes(w)
}

impl FieldMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `fields` fields of `text` bytes of names and values in all
    /// (no reallocation while an event is built).
    pub fn with_capacity(fields: usize, text: usize) -> Self {
        FieldMap {
            text: String::with_capacity(text),
            spans: Vec::with_capacity(fields),
        }
    }

    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let i = self.find(name).ok()?;
        let s = self.spans[i];
        Some(&self.text[s.value..s.end])
    }

    /// Whether field `name` is there.
    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Sets field `name` to `value` (replacing its value when it is there).
    pub fn insert(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        let (name, value) = (name.as_ref(), value.as_ref());
        let at = self.find(name);
        let start = self.text.len();
        self.text.push_str(name);
        let value_start = self.text.len();
        self.text.push_str(value);
        let span = Span {
            head: head(name.as_bytes()),
            name: start,
            value: value_start,
            end: self.text.len(),
        };
        match at {
            Ok(i) => self.spans[i] = span,
            Err(i) => self.spans.insert(i, span),
        }
    }

    /// The fields, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans
            .iter()
            .map(|s| (&self.text[s.name..s.value], &self.text[s.value..s.end]))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Where `name` is in `spans` (`Err`: where it would go).
    fn find(&self, name: &str) -> Result<usize, usize> {
        // Bytes compare as `str` does (and skip its character-boundary checks).
        let text = self.text.as_bytes();
        let (name, key) = (name.as_bytes(), head(name.as_bytes()));
        self.spans.binary_search_by(|s| {
            s.head.cmp(&key).then_with(|| {
                let len = s.value - s.name;
                if len <= 8 && name.len() <= 8 {
                    len.cmp(&name.len())
                } else {
                    text[s.name..s.value].cmp(name)
                }
            })
        })
    }
}

impl PartialEq for FieldMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for FieldMap {}

impl fmt::Debug for FieldMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for FieldMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = FieldMap::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<'a> IntoIterator for &'a FieldMap {
    type Item = (&'a str, &'a str);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a str)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl Serialize for FieldMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for FieldMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = FieldMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of field names to text")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<FieldMap, A::Error> {
                let mut map = FieldMap::new();
                // A name given twice keeps its last value, as a map would.
                while let Some((k, v)) = access.next_entry::<String, String>()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn reads_iterates_and_serializes_as_a_btree_map_would() {
        // The same inserts (replacements and non-ASCII names included) into both.
        let inserts = [
            ("upstream", "fastcgi://unix:/run/php.sock"),
            ("upstreams", "a ninth byte"),
            ("upstrea", "seven"),
            ("connection", "12"),
            ("connectio", "nine"),
            ("connect", "7"),
            ("a\0", "a NUL after"),
            ("a", "short"),
            ("a\0\0\0\0\0\0\0\0", "nine bytes, eight NULs"),
            ("a\0\0\0\0\0\0\0", "eight bytes"),
            ("\u{ff}", "high byte"),
            ("client", "203.0.113.9"),
            ("errno", "111"),
            ("client", "198.51.100.1"),
            ("é", "accent"),
            ("", "empty name"),
            ("Z", ""),
            ("request", "GET / HTTP/1.1"),
            ("errno", "2"),
        ];
        let mut ours = FieldMap::new();
        let mut tree = BTreeMap::new();
        for (k, v) in inserts {
            ours.insert(k, v);
            tree.insert(k.to_string(), v.to_string());
            assert_eq!(ours.len(), tree.len());
            let pairs: Vec<(&str, &str)> = tree.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            assert_eq!(ours.iter().collect::<Vec<_>>(), pairs);
        }
        let probes = [
            "upstream",
            "upstreams",
            "upstrea",
            "upstreamx",
            "connection",
            "connectio",
            "connect",
            "connections",
            "a",
            "a\0",
            "a\0\0",
            "a\0\0\0\0\0\0\0",
            "a\0\0\0\0\0\0\0\0",
            "a\0\0\0\0\0\0\0\0\0",
            "\u{ff}",
            "client",
            "errno",
            "é",
            "",
            "Z",
            "request",
            "missing",
            "e",
        ];
        for k in probes {
            assert_eq!(ours.get(k), tree.get(k).map(String::as_str), "{k}");
            assert_eq!(ours.contains_key(k), tree.contains_key(k));
        }
        let json = serde_json::to_string(&ours).unwrap();
        assert_eq!(json, serde_json::to_string(&tree).unwrap());
        let back: FieldMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ours);
        // A repeated name keeps its last value; a non-map is an error, not a panic.
        let dup: FieldMap = serde_json::from_str(r#"{"a":"1","b":"2","a":"3"}"#).unwrap();
        assert_eq!(dup.iter().collect::<Vec<_>>(), vec![("a", "3"), ("b", "2")]);
        assert!(serde_json::from_str::<FieldMap>(r#"["a"]"#).is_err());
        assert!(serde_json::from_str::<FieldMap>(r#"{"a":1}"#).is_err());
        assert_eq!(format!("{ours:?}"), format!("{tree:?}"));
        // Equality is by content, not by the buffer's history.
        let fresh: FieldMap = tree.iter().collect();
        assert_eq!(fresh, ours);
        assert_ne!(fresh, FieldMap::new());
        assert!(FieldMap::new().is_empty());
    }
}
