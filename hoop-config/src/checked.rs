//! Strict deserialization that reports every problem, not just the first.
//!
//! serde stops at the first error, and a derived `deny_unknown_fields` struct
//! names only the first unknown key. Operators fixing a file want the whole
//! list at once, each with its line and column. So a section is checked key by
//! key: the struct's own field list (read from its derived `Deserialize`, so it
//! can never drift from the struct) finds every unknown key, and each known key
//! is deserialized on its own so that a bad value is located at that key.

use serde::{
    Deserializer,
    de::{self, DeserializeOwned, Visitor},
};
use serde_yaml_ng::{Mapping, Value};

use super::{
    diagnostic::{At, Diagnostics, Severity, did_you_mean},
    source::KeyPath,
};

/// A checker for a nested key that needs its own key-by-key treatment.
pub type NestedCheck<'f> = &'f dyn Fn(&Value, &KeyPath, &mut Diagnostics<'_>);

/// Deserializes `T` from `value` (found at `path`), recording in `diags` every
/// unknown key and every key whose value does not fit.
///
/// `nested` lists keys whose values are checked by their own function (for
/// nested structs, so their unknown keys are located too); the value is still
/// deserialized as part of `T`. Returns `None` when anything was wrong.
/// A null value (an empty section such as `admin:`) reads as an empty mapping.
pub fn deserialize_checked<T: DeserializeOwned>(
    value: &Value,
    path: &KeyPath,
    diags: &mut Diagnostics<'_>,
    nested: &[(&str, NestedCheck<'_>)],
) -> Option<T> {
    let empty = Value::Mapping(Mapping::new());
    let value = if value.is_null() { &empty } else { value };
    let (Some(fields), Value::Mapping(map)) = (struct_fields::<T>(), value) else {
        return match serde_yaml_ng::from_value::<T>(value.clone()) {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                report_serde(diags, path, &e);
                None
            }
        };
    };
    let mut ok = true;
    let mut cleaned = Mapping::new();
    for (key, child) in map {
        let Some(name) = key.as_str() else {
            diags.push(
                Severity::Error,
                path,
                At::Value,
                format!("keys must be strings, found {key:?}"),
                None,
            );
            ok = false;
            continue;
        };
        let child_path = path.key(name);
        if !fields.contains(&name) {
            let hint = did_you_mean(name, fields.iter().copied())
                .unwrap_or_else(|| format!("expected one of: {}", fields.join(", ")));
            diags.push(
                Severity::Error,
                &child_path,
                At::Key,
                format!("unknown key `{name}`"),
                Some(hint),
            );
            ok = false;
            continue;
        }
        if let Some((_, check)) = nested.iter().find(|(k, _)| *k == name) {
            let before = diags.error_count();
            check(child, &child_path, diags);
            ok &= diags.error_count() == before;
        } else {
            let mut single = Mapping::new();
            single.insert(key.clone(), child.clone());
            if let Err(e) = serde_yaml_ng::from_value::<T>(Value::Mapping(single)) {
                // Required keys are missing from a one-key mapping by design; the
                // whole-mapping pass below reports those.
                if !e.to_string().starts_with("missing field") {
                    report_serde(diags, &child_path, &e);
                    ok = false;
                }
            }
        }
        cleaned.insert(key.clone(), child.clone());
    }
    match serde_yaml_ng::from_value::<T>(Value::Mapping(cleaned)) {
        Ok(parsed) if ok => Some(parsed),
        Ok(_) => None,
        Err(e) => {
            if ok || e.to_string().starts_with("missing field") {
                report_serde(diags, path, &e);
            }
            None
        }
    }
}

/// Records a serde error, adding a "did you mean" for unknown enum variants.
pub fn report_serde(diags: &mut Diagnostics<'_>, path: &KeyPath, e: &serde_yaml_ng::Error) {
    let message = e.to_string();
    let hint = unknown_variant_hint(&message);
    // A missing key is best shown at the key of the mapping that lacks it.
    let at = if message.starts_with("missing field") {
        At::Key
    } else {
        At::Value
    };
    diags.push(Severity::Error, path, at, message, hint);
}

/// `unknown variant `partal`, expected one of `redact`, `partial`` → `did you mean "partial"?`.
fn unknown_variant_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown variant `")?;
    let (word, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    did_you_mean(word, candidates.iter().copied())
}

/// The field names a derived `Deserialize` struct accepts, or `None` for non-structs.
///
/// Asks the derive itself: it hands its field list to `deserialize_struct`.
pub fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    let _ = T::deserialize(FieldsProbe(&mut fields));
    fields
}

/// The variant names a derived `Deserialize` enum accepts (after renaming),
/// or an empty list for non-enums.
pub fn enum_variants<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut variants = None;
    let _ = T::deserialize(FieldsProbe(&mut variants));
    variants.unwrap_or(&[])
}

struct FieldsProbe<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldsProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("probed"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(variants);
        Err(de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map identifier ignored_any
    }
}
