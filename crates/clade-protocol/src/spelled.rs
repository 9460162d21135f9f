//! [`Spelled`]: a word of `clade-core`'s vocabulary on the wire, written with its one spelling.

use std::borrow::Cow;

use clade_core::Word;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A vocabulary word (a turn's status, an event's kind, …) as JSON: its spelling, read back
/// with `parse`, so the wire and the store share `clade-core`'s one spelling of each word. Its
/// schema is an enum of every spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Spelled<T>(pub T);

impl<T: Word> Serialize for Spelled<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de, T: Word> Deserialize<'de> for Spelled<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        T::parse(&text).map(Spelled).ok_or_else(|| {
            let words: Vec<&str> = T::ALL.iter().map(|w| w.as_str()).collect();
            serde::de::Error::custom(format!("{text:?} is not one of {}", words.join(", ")))
        })
    }
}

impl<T: Word> JsonSchema for Spelled<T> {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed(T::NAME)
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let words: Vec<&str> = T::ALL.iter().map(|w| w.as_str()).collect();
        json_schema!({ "type": "string", "enum": words })
    }
}

impl<T> From<T> for Spelled<T> {
    fn from(word: T) -> Self {
        Spelled(word)
    }
}
