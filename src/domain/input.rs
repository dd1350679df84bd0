//! Lenient reading of JSON request bodies the way OpenSpecimen's Jackson setup reads them: strings
//! are trimmed (blank means absent), numbers may arrive as numeric strings, and `null` means absent.
//! Each accessor says whether the field was missing, valid, or present but unusable.

use serde_json::{Map, Value};

/// The outcome of reading one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<T> {
    Missing,
    Value(T),
    Invalid,
}

pub struct Fields<'a> {
    body: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a Map<String, Value>) -> Self {
        Fields { body }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.body.get(name).filter(|v| !v.is_null())
    }

    /// A trimmed, non-blank string; numbers and booleans are taken as their text.
    pub fn string(&self, name: &str) -> Option<String> {
        let text = match self.get(name)? {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return None,
        };
        (!text.is_empty()).then_some(text)
    }

    /// A whole number, given as a JSON integer or a numeric string.
    pub fn int(&self, name: &str) -> Field<i64> {
        match self.get(name) {
            None => Field::Missing,
            Some(Value::Number(n)) => n.as_i64().map_or(Field::Invalid, Field::Value),
            Some(Value::String(s)) if s.trim().is_empty() => Field::Missing,
            Some(Value::String(s)) => s.trim().parse().map_or(Field::Invalid, Field::Value),
            Some(_) => Field::Invalid,
        }
    }

    pub fn bool(&self, name: &str) -> Field<bool> {
        match self.get(name) {
            None => Field::Missing,
            Some(Value::Bool(b)) => Field::Value(*b),
            Some(Value::String(s)) => match s.trim() {
                "true" => Field::Value(true),
                "false" => Field::Value(false),
                "" => Field::Missing,
                _ => Field::Invalid,
            },
            Some(_) => Field::Invalid,
        }
    }

    /// An object reference `{"id": N}` (a bare number is accepted too).
    pub fn id_ref(&self, name: &str) -> Field<i64> {
        match self.get(name) {
            None => Field::Missing,
            Some(value) => id_of(value),
        }
    }

    /// A list of references `[{"id": N}, …]`; duplicates collapse, order is kept.
    pub fn id_list(&self, name: &str) -> Field<Vec<i64>> {
        match self.get(name) {
            None => Field::Missing,
            Some(Value::Array(items)) => {
                let mut ids = Vec::new();
                for item in items {
                    match id_of(item) {
                        Field::Value(id) => {
                            if !ids.contains(&id) {
                                ids.push(id);
                            }
                        }
                        _ => return Field::Invalid,
                    }
                }
                Field::Value(ids)
            }
            Some(_) => Field::Invalid,
        }
    }
}

fn id_of(value: &Value) -> Field<i64> {
    match value {
        Value::Object(map) => match map.get("id") {
            None | Some(Value::Null) => Field::Missing,
            Some(Value::Number(n)) => n.as_i64().map_or(Field::Invalid, Field::Value),
            Some(Value::String(s)) => s.trim().parse().map_or(Field::Invalid, Field::Value),
            Some(_) => Field::Invalid,
        },
        Value::Number(n) => n.as_i64().map_or(Field::Invalid, Field::Value),
        _ => Field::Invalid,
    }
}
